"""TensorRT engine build from the ONNX export (the backend that runs it: tensorrt_backend).

Build: optimisation profile min 1 / opt B / max Bmax on the batch axis (H, W fixed
by the export); FP16 for the convolutional trunk with FP32 kept where FP16 is
unstable: the memory-bank search computes cosine distance as 1 - cos, and near a
match (cos ~ 1) FP16's spacing of ~5e-4 is as large as the distances themselves;
top-k, reductions, normalisation and resizing of the map stay FP32 as well.

tensorrt and pycuda are imported inside functions only, when this backend is used.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from engine.runtime.engine_cache import EngineKey, Precision, ProgressFn
from engine.runtime.export import INPUT_NAME
from engine.runtime.protocol import GPU_EXTRA_HINT, BackendUnavailableError

log = logging.getLogger(__name__)

# ONNX node-name prefixes of the visual trunk (VisualEncoder.stem / .blocks): FP16 there
FP16_SCOPES = ("/stem", "/blocks.")
_FP32_LAYER_TYPES = ("MATRIX_MULTIPLY", "TOPK", "REDUCE", "NORMALIZATION", "SOFTMAX", "RESIZE")


def gpu_packages_present() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))


def cuda_device_count() -> int:
    """CUDA devices pycuda can see; 0 without pycuda or a working driver.

    Asked of the driver, not of torch: the pinned torch wheel is the CPU build, so
    torch.cuda says "no GPU" on a GPU worker that has tensorrt and pycuda.
    """
    if importlib.util.find_spec("pycuda") is None:
        return 0
    import pycuda.driver as cuda

    try:
        cuda.init()
        return int(cuda.Device.count())
    except Exception:  # noqa: BLE001 - any driver failure means "no usable GPU" here
        return 0


def require_gpu() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver) with CUDA initialised, or a clear BackendUnavailableError."""
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"the tensorrt backend needs {' and '.join(missing)}, not installed: {GPU_EXTRA_HINT}"
        )
    import pycuda.driver as cuda
    import tensorrt as trt

    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:  # driver present but unusable (no GPU, container without it)
        raise BackendUnavailableError(f"no usable CUDA GPU: {exc}") from exc
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU")
    return trt, cuda


def engine_key(trt: Any, cuda: Any, model_hash: str, frame_size: tuple[int, int],
               precision: Precision, max_batch: int, opt_batch: int,
               device: int = 0) -> EngineKey:  # fmt: skip
    dev = cuda.Device(device)
    return EngineKey(model_hash=model_hash, gpu_name=dev.name(),
                     compute_capability=tuple(dev.compute_capability()),
                     tensorrt_version=trt.__version__, precision=precision,
                     max_batch=max_batch, opt_batch=opt_batch, frame_size=frame_size)  # fmt: skip


def _pin_fp32(trt: Any, network: Any) -> int:
    """Constrain every float layer outside the trunk (and unstable types inside) to FP32."""
    floats = (trt.float32, trt.float16)
    fp32_types = tuple(getattr(trt.LayerType, t) for t in _FP32_LAYER_TYPES)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name.startswith(FP16_SCOPES) and layer.type not in fp32_types:
            continue
        ins = [layer.get_input(k) for k in range(layer.num_inputs)]
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        # shape arithmetic (int32/int64) and the uint8 -> float cast take no precision
        if (
            not outs
            or any(t.dtype not in floats for t in outs)
            or any(t is not None and t.dtype not in floats for t in ins)
        ):
            continue
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            layer.set_output_type(k, trt.float32)
        pinned += 1
    return pinned


TRT_MAX_TOPK = 3840  # ITopKLayer: k <= 3840 (TensorRT operator reference, TopK)


def check_tensorrt_limits(onnx_bytes: bytes) -> None:
    """Fail before a minutes-long build on what TensorRT is documented not to support.

    CladRuntime takes the top 1 % of the map pixels at its processing size, so k grows
    with input_size squared: 320 px -> 1024, 448 -> 2007, but 640 -> 4096 > 3840.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"})
    for node in graph.node:
        if node.op_type != "TopK" or node.input[1] not in consts:
            continue
        k = int(numpy_helper.to_array(consts[node.input[1]]).reshape(-1)[0])
        if k > TRT_MAX_TOPK:
            raise ValueError(
                f"TopK {node.name} takes k={k}, TensorRT supports k <= {TRT_MAX_TOPK}: use a "
                "smaller input_size or topk_ratio for this model, or the onnxruntime backend"
            )


def build_engine(onnx_bytes: bytes, frame_size: tuple[int, int], precision: Precision,
                 max_batch: int, opt_batch: int, workspace_bytes: int = 2 << 30,
                 progress: ProgressFn | None = None) -> bytes:  # fmt: skip
    """Serialized engine from an ONNX export (minutes on a large model; cache it)."""
    trt, _ = require_gpu()
    check_tensorrt_limits(onnx_bytes)
    say = progress or (lambda msg: log.info("%s", msg))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    h, w = frame_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, h, w, 3), (opt_batch, h, w, 3), (max_batch, h, w, 3))
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        # PREFER (not OBEY): a layer with no FP32 kernel falls back with a warning
        # instead of failing the build; the parity test checks the outcome
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        say(f"FP16 build; {_pin_fp32(trt, network)} layers kept in FP32")
    monitor = _progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor
    say(f"building TensorRT {trt.__version__} engine: batch 1/{opt_batch}/{max_batch}, "
        f"{h}x{w}, {precision}")  # fmt: skip
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(data)


def _progress_monitor(trt: Any, say: ProgressFn) -> Any | None:
    base = getattr(trt, "IProgressMonitor", None)  # TensorRT >= 10
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            if parent_phase is None:  # only top-level phases: nested ones are noise
                say(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return _Monitor()
