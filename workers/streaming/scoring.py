"""What the worker needs from a model, and how it gets one per product.

The worker only sees `ScoringEngine`: the CLAD runtime (torch, onnxruntime,
TensorRT) sits behind the adapter, and tests plug in a small deterministic
engine through `WorkerSettings.engine_factory`.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from pipeline.settings import LineContextSettings, Settings

log = logging.getLogger(__name__)


@runtime_checkable
class ScoringEngine(Protocol):
    """Scores a batch of same-size frames; higher = more anomalous."""

    input_size: int  # frames are resized to input_size x input_size before infer
    threshold: float  # image score above it -> "anomalous"
    version: str
    # An engine may also carry `pixel_threshold` (the region threshold calibrated with
    # `threshold`); not a protocol member so engines written without it still serve:
    # see region_threshold_of.

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, 3] RGB -> (scores [N], maps [N, h, w]) as float arrays."""
        ...


class CladRuntimeEngine:
    """Adapter from engine.scoring.runtime_model.CladRuntime (an nn.Module) to ScoringEngine.

    `describer` (engine.defects.describer_artifacts.LoadedDescriber) is optional: without
    one, regions are stored without descriptions. `describer_encoder`
    (engine.defects.describer_features.DescriberEncoder) computes the describer's input when
    the runtime's patch embeddings are not what it was trained on (the default one).
    `context` (engine.scoring.line_context.ContextConfig) scores every frame also against this
    product's recent frames: the engine is per product and a reload builds a new one, so
    the context is never shared across products and restarts empty with a new model (old
    embeddings do not match).
    """

    def __init__(self, runtime: object, *, threshold: float, version: str,
                 describer: object | None = None, backend: object | None = None,
                 pixel_threshold: float | None = None,
                 describer_encoder: Callable[[np.ndarray], object] | None = None,
                 context: object | None = None, context_stage: object | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        import torch

        self._torch = torch
        self.runtime = runtime.eval()  # type: ignore[attr-defined]
        self.input_size = int(runtime.input_size)  # type: ignore[attr-defined]
        self.threshold = float(threshold)
        # region cut on the pixel map; None = the image threshold (both maps are in
        # "normal ~ 1" units, see engine.scoring.artifacts.region_threshold)
        self.pixel_threshold = float(threshold if pixel_threshold is None else pixel_threshold)
        self.version = version
        self.describer = describer
        self.describer_encoder = describer_encoder
        # engine.runtime backend (onnxruntime, tensorrt, torch); None = the module itself
        self.backend = backend
        self.clock = clock or time.monotonic
        self.line_context = None
        self.context_stage = None
        if context is not None:
            from engine.scoring.line_context import LineContext

            self.line_context = LineContext(context, threshold=self.threshold)  # type: ignore[arg-type]
            self.context_stage = context_stage
            self.context_module, self.context_device, self.context_fp16 = \
                context_runtime(self.runtime, backend, torch)
            if backend is not None and context_stage is None:
                log.info("line context on: %s scores with the torch module on %s%s, not %s",
                         version, self.context_device,
                         " (fp16)" if self.context_fp16 else "",
                         getattr(backend, "name", backend))

    def patch_embeddings(self, frames: np.ndarray) -> object:
        """uint8 NHWC -> the runtime's patch embeddings [N, C, h, w] (describer input).
        Run only for frames that have regions, so normal frames pay nothing."""
        from engine.defects.describer import frame_patch_embeddings

        if self.describer_encoder is not None:
            return self.describer_encoder(frames)
        rt = self.runtime
        return frame_patch_embeddings(rt.encoder, rt.preprocess,
                                      self._torch.from_numpy(np.ascontiguousarray(frames)),
                                      rt.pool)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.line_context is not None:
            return self._infer_with_context(frames)
        if self.backend is not None:
            scores, maps = self.backend.infer(np.ascontiguousarray(frames))  # type: ignore[attr-defined]
            return np.asarray(scores, np.float32), np.asarray(maps, np.float32)
        with self._torch.inference_mode():
            out = self.runtime(self._torch.from_numpy(np.ascontiguousarray(frames)))
        return out.scores.float().numpy(), out.maps.float().numpy()

    def _infer_with_context(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score against references + context, then offer each frame to the context
        (admitted only under its cut: a run of defects is scored, never learnt)."""
        from engine.scoring.line_context import score_and_offer

        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.context_device)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16,
                                                    enabled=self.context_fp16):
            out = score_and_offer(self.context_module, x, self.line_context,  # type: ignore[arg-type]
                                  self.clock(), self.context_stage)  # type: ignore[arg-type]
        return out.scores.float().cpu().numpy(), out.maps.float().cpu().numpy()


def context_runtime(runtime: object, backend: object | None,
                    torch: object) -> tuple[object, object, bool]:
    """(module, device, fp16) that score with a line context.

    The context search needs the encoder's embeddings, which a compiled backend does not
    return, so it runs in torch. On a GPU worker it runs on the GPU in fp16 like the
    torch-cuda backend (the backend's own CUDA copy when it has one): on the 2-core CPU
    it scores ~15 img/s against ~700 on an H200 (batch 8, engine/runtime/NOTES.md).
    Elsewhere: the module on the CPU.
    """
    device = getattr(backend, "device", None)
    if getattr(device, "type", None) == "cuda":  # TorchBackend on CUDA: reuse its copy
        return backend.runtime, device, bool(getattr(backend, "fp16", False))  # type: ignore[union-attr]
    name = str(getattr(backend, "name", ""))
    if name.startswith("tensorrt") and torch.cuda.is_available():  # type: ignore[attr-defined]
        import copy

        cuda = torch.device("cuda")  # type: ignore[attr-defined]
        return copy.deepcopy(runtime).eval().to(cuda), cuda, True  # type: ignore[attr-defined]
    return runtime, torch.device("cpu"), False  # type: ignore[attr-defined]


def region_threshold_of(engine: ScoringEngine) -> float:
    """The engine's region (pixel) threshold; the image threshold for an engine that has
    none (test engines, factories that predate it): the cut every engine used before."""
    return float(getattr(engine, "pixel_threshold", engine.threshold))


EngineFactory = Callable[[Settings], Mapping[str, ScoringEngine]]


def import_factory(path: str) -> EngineFactory:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"engine_factory {path!r} must look like 'package.module:callable'")
    return getattr(importlib.import_module(module_name), attr)


def context_config(settings: LineContextSettings) -> object | None:
    """engine.scoring.line_context.ContextConfig from the settings; None when switched off."""
    if not settings.line_context:
        return None
    from engine.scoring.line_context import ContextConfig

    return ContextConfig(max_frames=settings.line_context_frames,
                         max_age_s=settings.line_context_max_age_s,
                         search_frames=settings.line_context_search_frames,
                         floor=settings.line_context_floor)


def load_trained(path: Path, category: str | None = None,
                 threshold_override: float | None = None, *, backend: str = "torch",
                 max_batch: int = 32, context: object | None = None,
                 requests: int | None = None,
                 precision: Literal["fp32", "int8"] = "fp32") -> tuple[str, ScoringEngine]:
    """(product, engine) from a saved model version (engine.scoring.artifacts layout), served
    by the chosen runtime backend (`ModelSettings.backend`: auto picks TensorRT on a
    GPU, else onnxruntime; engine.runtime.select) with `requests` CPU
    inference requests in flight (None: engine.runtime.parallel's default). ONNX files
    and compiled engines are cached in the version dir. `precision` "int8": the version's
    INT8 IR under OpenVINO (`ModelSettings.cpu_precision`), plain graph only."""
    from engine.runtime.select import make_backend
    from engine.scoring.artifacts import load_model, resolve

    version_dir = resolve(path, category)
    loaded = load_model(version_dir)
    threshold = threshold_override if threshold_override is not None else loaded.threshold
    describer = load_region_describer(version_dir, loaded.runtime)
    encoder = None
    if describer is None:
        describer, encoder = default_for(loaded.runtime)
    if precision == "int8":
        if context is not None:
            raise ValueError(
                "CLAD_CPU_PRECISION=int8 runs the plain engine graph, and the line context "
                "(CLAD_LINE_CONTEXT, on by default) scores with FP32 embeddings: set "
                "CLAD_LINE_CONTEXT=false to serve INT8"
            )
        backend = "openvino" if backend == "auto" else backend
    runner = None if backend == "torch" and precision == "fp32" else make_backend(
        backend, loaded.runtime, version_dir=version_dir, max_batch=max_batch,  # type: ignore[arg-type]
        requests=requests, precision=precision)
    stage = None
    stage_kind = next((k for k in ("onnxruntime-cpu", "openvino-cpu")
                       if runner is not None and runner.name.startswith(k)), None)
    if context is not None and stage_kind is not None and loaded.runtime.text_branch is None:
        # the context needs the embeddings: a second graph returns them (same CPU runtime,
        # same requests in flight), the context search runs in torch; other backends and
        # text models score in torch
        from engine.runtime.context_stage import OnnxContextStage
        from engine.runtime.parallel import cpu_cores, default_requests, threads_per_request

        n = requests or default_requests(cpu_cores())
        stage = OnnxContextStage(loaded.runtime, version_dir, threads_per_request(cpu_cores(), n),
                                 requests=n, kind=stage_kind.removesuffix("-cpu"))  # type: ignore[arg-type]
    # an overridden image threshold keeps the calibrated region threshold: that one
    # says what normal pixels look like, whatever rate of frames is flagged
    return loaded.category, CladRuntimeEngine(loaded.runtime, threshold=threshold,
                                              version=str(loaded.version), describer=describer,
                                              backend=runner,
                                              pixel_threshold=loaded.pixel_threshold,
                                              describer_encoder=encoder, context=context,
                                              context_stage=stage)


def load_region_describer(version_dir: Path, runtime: object) -> object | None:
    """The product's own describer saved beside its model, or None (logged): the
    default describer then names generic kinds (`describer_for`)."""
    from engine.defects.describer_artifacts import load_describer
    from engine.errors import ModelArtifactError

    try:
        loaded = load_describer(version_dir)
    except (ModelArtifactError, OSError, ValueError, RuntimeError, KeyError) as exc:
        log.warning("%s has no describer of its own (%s); regions get no descriptions "
                    "from it", version_dir, exc)
        return None
    # The describer pools the runtime's patch embeddings: their width must match.
    channels = sum(runtime.encoder.channels)  # type: ignore[attr-defined]
    if loaded.describer.in_channels != channels:
        log.warning("describer in %s expects %s channels, the model gives %s; regions will "
                    "have no descriptions from it", version_dir, loaded.describer.in_channels,
                    channels)
        return None
    return loaded


@functools.cache
def default_describer() -> tuple[object, object] | None:
    """(default describer, its encoder), loaded once per process on first use and shared
    by every product without a describer of its own; None (logged) if it cannot load."""
    from engine.defects.describer_artifacts import load_default_describer
    from engine.defects.describer_features import DescriberEncoder
    from engine.errors import MissingWeightsError, ModelArtifactError

    try:
        loaded = load_default_describer()
        return loaded, DescriberEncoder(loaded.features)
    except (ModelArtifactError, MissingWeightsError, OSError, ValueError, RuntimeError,
            KeyError) as exc:
        log.warning("default describer unavailable, regions without a product describer "
                    "get no descriptions: %s", exc)
        return None


def default_for(runtime: object) -> tuple[object | None, object | None]:
    """(the default describer, its encoder) for a product without a describer of its
    own; the encoder is None when the product model's embeddings are the ones it reads."""
    from engine.defects.describer_features import reads_runtime_features

    default = default_describer()
    if default is None:
        return None, None
    loaded, encoder = default
    return loaded, (None if reads_runtime_features(loaded, runtime) else encoder)


def factory_engines(settings: Settings) -> dict[str, ScoringEngine]:
    """Engines by product from CLAD_ENGINE_FACTORY (tests, benchmarks). Without a factory
    the worker serves what the database names active: workers.streaming.active_models."""
    if not settings.worker.engine_factory:
        raise ValueError("CLAD_ENGINE_FACTORY is not set")
    engines = dict(import_factory(settings.worker.engine_factory)(settings))
    if not engines:
        raise RuntimeError(f"engine factory {settings.worker.engine_factory} returned no engine")
    return engines


def check_engines(engines: Mapping[str, ScoringEngine]) -> None:
    """Every engine satisfies ScoringEngine; logs what is served."""
    for product, engine in engines.items():
        if not isinstance(engine, ScoringEngine):
            raise TypeError(f"engine for {product!r} does not satisfy ScoringEngine")
        log.info("serving product %s with model %s (input %s px, threshold %.4g, region "
                 "threshold %.4g)", product, engine.version, engine.input_size,
                 engine.threshold, region_threshold_of(engine))
