"""OpenVINO backend (CPU plugin): the exported ONNX file, compiled for this CPU.

Issue 17 measured it ahead of onnxruntime on the 2-core x86 workers at equal scores;
on a loaded host on 2026-11-30 the two were level at batch 8 (NOTES.md "2026-11-30").
The compiled model is exported once and cached beside the ONNX file
(`runtime/openvino/`), keyed like the TensorRT engines by the weights hash, OpenVINO
version, CPU, precision, streams, threads and pinning: a worker that restarts, or a
second worker on the same host, imports it instead of compiling. N infer requests
(one per stream, PERFORMANCE_HINT=THROUGHPUT) share each batch (parallel.py).
`openvino` is imported only when this backend is built.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from engine.runtime.engine_cache import ProgressFn, load_or_build_file
from engine.runtime.export import INPUT_NAME, OUTPUT_NAMES, RUNTIME_SUBDIR, ensure_onnx, export_onnx
from engine.runtime.parallel import PooledBackend, RequestPool
from engine.runtime.protocol import BackendUnavailableError

log = logging.getLogger(__name__)

OvPrecision = Literal["fp32", "bf16", "int8"]
OPENVINO_SUBDIR = "openvino"
INSTALL_HINT = "pip install openvino"
# int8: the quantized trunk is in the IR itself (engine.runtime.int8); the rest runs f32
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _require_openvino() -> Any:
    if not openvino_installed():
        raise BackendUnavailableError(
            f"the openvino backend needs the openvino package ({INSTALL_HINT})"
        )
    import openvino

    return openvino


def compile_config(
    requests: int, threads: int, precision: OvPrecision, cpu_pinning: bool = True
) -> dict[str, str]:
    """CPU plugin properties: throughput mode with one stream per request in flight.

    The precision is pinned: on CPUs with AVX512-BF16 or AMX the plugin's default is
    bf16, which moved scores by 5e-2 (64 px) to 0.19 (320 px) here (the parity bound is
    1e-4). `cpu_pinning`
    False leaves the stream threads to the OS scheduler (a host shared with other
    processes)."""
    return {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": str(requests),
        "INFERENCE_NUM_THREADS": str(requests * threads),
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "ENABLE_CPU_PINNING": "YES" if cpu_pinning else "NO",
    }


def cache_key(ov: Any, core: Any, digest: str, frame_size: tuple[int, int],
              config: dict[str, str]) -> dict[str, object]:  # fmt: skip
    return {"model_hash": digest, "openvino_version": ov.get_version().split("-")[0],
            "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "frame_size": list(frame_size), "config": config}  # fmt: skip


def cache_path(version_dir: str | Path, key: dict[str, object]) -> Path:
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", str(key["cpu"])).strip("-").lower()
    cfg = key["config"]
    h, w = key["frame_size"]  # type: ignore[misc]
    name = (f"{key['model_hash']}-{cpu}-ov{key['openvino_version']}-"
            f"{cfg['INFERENCE_PRECISION_HINT']}-s{cfg['NUM_STREAMS']}"  # type: ignore[index]
            f"t{cfg['INFERENCE_NUM_THREADS']}-{h}x{w}.blob")  # type: ignore[index]  # fmt: skip
    return Path(version_dir) / RUNTIME_SUBDIR / OPENVINO_SUBDIR / name


def request_runner(request: Any) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """One infer request as a RequestPool runner: frames -> every output, float32 copies."""
    count = len(request.model_outputs)

    def run(frames: np.ndarray) -> tuple[np.ndarray, ...]:
        request.infer({0: frames}, share_inputs=True)
        # copies: the request's output tensors are reused by its next batch
        return tuple(np.array(request.get_output_tensor(i).data, np.float32, copy=True)
                     for i in range(count))  # fmt: skip

    return run


class OpenVinoBackend(PooledBackend):
    """InferenceBackend over a compiled OpenVINO model: N infer requests, one per stream."""

    def __init__(self, compiled: Any, precision: OvPrecision, max_batch: int = 32) -> None:
        inp = compiled.inputs[0]
        # an output may carry its graph-internal name too ({"/Squeeze_4_output_0", "maps"})
        names = [o.get_names() for o in compiled.outputs]
        if (
            INPUT_NAME not in inp.get_names()
            or len(names) != len(OUTPUT_NAMES)
            or any(want not in got for want, got in zip(OUTPUT_NAMES, names, strict=False))
        ):
            raise ValueError("not a clad export: unexpected inputs/outputs")
        shape = inp.get_partial_shape()
        self.frame_size = (shape[1].get_length(), shape[2].get_length())
        self.compiled = compiled
        self.requests = int(compiled.get_property("NUM_STREAMS"))
        self.max_batch = int(max_batch)
        self.name = f"openvino-cpu-{precision}"
        self._pool = RequestPool(
            [request_runner(compiled.create_infer_request()) for _ in range(self.requests)],
            "openvino",
        )


def compile_onnx(
    onnx_file: Path,
    digest: str,
    frame_size: tuple[int, int],
    version_dir: str | Path | None,
    config: dict[str, str],
    progress: ProgressFn | None = None,
) -> Any:
    """The compiled model for `onnx_file`: imported from the cache, or compiled (and cached)."""
    ov = _require_openvino()
    core = ov.Core()
    if version_dir is None:  # a model that was never saved: compile, keep nothing
        return core.compile_model(core.read_model(str(onnx_file)), "CPU", config)
    key = cache_key(ov, core, digest, frame_size, config)
    compiled: list[Any] = []

    def build() -> bytes:
        compiled.append(core.compile_model(core.read_model(str(onnx_file)), "CPU", config))
        return compiled[0].export_model().getvalue()

    say = progress or (lambda msg: log.info("%s", msg))
    blob = load_or_build_file(cache_path(version_dir, key), key, build, say, "OpenVINO model")
    if compiled:
        return compiled[0]
    # the properties are given again: an imported blob otherwise takes the plugin defaults
    return core.import_model(blob, "CPU", config)


def openvino_backend(
    runtime: nn.Module,
    version_dir: str | Path | None,
    *,
    requests: int,
    threads: int,
    max_batch: int = 32,
    precision: OvPrecision = "fp32",
    progress: ProgressFn | None = None,
    cpu_pinning: bool = True,
    int8_ir: Path | None = None,
) -> OpenVinoBackend:
    """Export (or reuse) the ONNX file, import or compile it for this CPU, run it.

    precision "int8": the INT8 IR built for these weights (`clad export --backend
    openvino --precision int8 --references DIR`, engine.runtime.int8) from the version
    directory, or `int8_ir`; compiled at start (a few seconds), not cached."""
    _require_openvino()  # fail before a slow export when the package is absent
    config = compile_config(requests, threads, precision, cpu_pinning)
    if precision == "int8":
        ir = int8_ir or _int8_of(runtime, version_dir)
        core = _require_openvino().Core()
        return OpenVinoBackend(core.compile_model(core.read_model(str(ir)), "CPU", config),
                               precision, max_batch)  # fmt: skip
    if version_dir is not None:
        exp = ensure_onnx(runtime, version_dir)
        compiled = compile_onnx(exp.path, exp.model_hash, exp.frame_size, version_dir, config,
                                progress)  # fmt: skip
    else:
        with tempfile.TemporaryDirectory() as tmp:
            exp = export_onnx(runtime, Path(tmp) / "model.onnx")
            compiled = compile_onnx(exp.path, exp.model_hash, exp.frame_size, None, config)
    return OpenVinoBackend(compiled, precision, max_batch)


def _int8_of(runtime: nn.Module, version_dir: str | Path | None) -> Path:
    from engine.runtime.int8 import find_int8, int8_dir

    found = find_int8(int8_dir(version_dir), runtime) if version_dir is not None else None  # type: ignore[arg-type]
    if found is None:
        where = f"in {int8_dir(version_dir)}" if version_dir is not None else "(no model directory)"
        raise BackendUnavailableError(
            f"no INT8 model for these weights {where}: build it with `clad export --model DIR "
            f"--backend openvino --precision int8 --references GOOD_IMAGES_DIR`"
        )
    return found
