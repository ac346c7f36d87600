"""Choose and build a runtime backend for a model (the choice is an argument, never env).

auto = tensorrt where a CUDA GPU and the tensorrt + pycuda packages are present;
else onnxruntime where its CUDA EP build is installed; else onnxruntime's CPU EP.
OpenVINO runs only when asked for (`CLAD_BACKEND=openvino`): on this project's 2-core
x86 host (AVX-512) with nothing else running, one onnxruntime session was faster than
OpenVINO at batch 1, 8 and 32 (x0.48 / 0.91 / 0.91 for OpenVINO with 2 requests,
bench.engine on 2026-11-30, engine/runtime/NOTES.md). Issue 17 had measured OpenVINO
2.05x ahead on an AVX2-only EPYC, but on a machine under load, where runtimes with more
threads take a larger share of the CPU: a plant with such CPUs should run bench.engine
there and set the backend it wins with.

On CPU several inference requests can run at once (`requests`; default one per 4 cores,
at most 4, each with cores / requests threads: parallel.py).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

from torch import nn

from engine.runtime.engine_cache import Precision, ProgressFn
from engine.runtime.parallel import cpu_cores, default_requests, threads_per_request
from engine.runtime.protocol import BackendUnavailableError, InferenceBackend

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "tensorrt", "onnxruntime", "openvino", "torch"]
ConcreteKind = Literal["tensorrt", "onnxruntime", "openvino", "torch"]


def tensorrt_usable() -> bool:
    """tensorrt and pycuda installed and the CUDA driver sees a GPU."""
    from engine.runtime.tensorrt_build import cuda_device_count, gpu_packages_present

    return gpu_packages_present() and cuda_device_count() > 0


def onnxruntime_cuda_usable() -> bool:
    from engine.runtime.onnxruntime_backend import available_providers

    return "CUDAExecutionProvider" in available_providers()


def resolve_kind(kind: BackendKind) -> ConcreteKind:
    if kind != "auto":
        return kind
    if tensorrt_usable():
        return "tensorrt"
    if onnxruntime_cuda_usable():
        return "onnxruntime"
    return "onnxruntime"


def _runtime_and_dir(model: nn.Module | str | Path) -> tuple[nn.Module, Path | None]:
    if isinstance(model, nn.Module):
        return model, None
    from engine.scoring.artifacts import load_model, resolve

    version_dir = resolve(model)
    return load_model(version_dir).runtime, version_dir


def make_backend(
    kind: BackendKind,
    model: nn.Module | str | Path,
    *,
    version_dir: str | Path | None = None,
    max_batch: int = 32,
    precision: Precision | Literal["int8"] = "fp16",
    intra_op_threads: int | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
    requests: int | None = None,
) -> InferenceBackend:
    """A backend for `model`: a CladRuntime, or a saved model version directory.

    Exported ONNX files and TensorRT engines are cached under the version directory
    (given, or the one `model` was loaded from); without one they are rebuilt in a
    temporary directory each time. `precision` applies to tensorrt and to torch on
    CUDA; onnxruntime and CPU torch always run FP32, openvino FP32 unless "int8" (the
    model's INT8 IR, engine.runtime.int8; openvino only). `requests` (CPU
    onnxruntime and openvino): inference requests in flight; None = as many requests of
    `intra_op_threads` threads as fill the cores, or, without that either, one per 4
    cores up to 4 with cores / requests threads each.
    """
    runtime, loaded_dir = _runtime_and_dir(model)
    vdir = Path(version_dir) if version_dir is not None else loaded_dir
    chosen = resolve_kind(kind)
    if precision == "int8" and chosen != "openvino":
        raise BackendUnavailableError(f"INT8 runs on the openvino backend only (asked: {kind}, "
                                      f"resolved to {chosen})")  # fmt: skip
    cores = cpu_cores()
    if requests is not None:
        n = requests
    elif intra_op_threads is not None:  # requests of that many threads filling the cores
        n = max(1, cores // intra_op_threads)
    else:
        n = default_requests(cores)
    threads = intra_op_threads if intra_op_threads is not None else threads_per_request(cores, n)
    log.info("runtime backend: %s (asked: %s)%s", chosen, kind,
             f", {n} requests x {threads} threads" if chosen in ("onnxruntime", "openvino")
             else "")  # fmt: skip
    if chosen == "torch":
        from engine.runtime.torch_backend import TorchBackend

        dev = device or "cpu"
        fp16 = precision == "fp16" and dev.startswith("cuda")
        return TorchBackend(runtime, dev, fp16=fp16, max_batch=max_batch, threads=intra_op_threads)
    if chosen == "onnxruntime":
        from engine.runtime.export import ensure_onnx, export_onnx
        from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend

        ort_device = "cuda" if device and device.startswith("cuda") else (device or "auto")
        if vdir is not None:
            path = ensure_onnx(runtime, vdir).path
            return OnnxRuntimeBackend(path, ort_device, threads, max_batch, n)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as tmp:
            data = export_onnx(runtime, Path(tmp) / "model.onnx").path.read_bytes()
        return OnnxRuntimeBackend(data, ort_device, threads, max_batch, n)  # type: ignore[arg-type]
    if chosen == "openvino":
        from engine.runtime.openvino_backend import openvino_backend

        return openvino_backend(runtime, vdir, requests=n, threads=threads, max_batch=max_batch,
                                progress=progress,
                                precision="int8" if precision == "int8" else "fp32")  # fmt: skip
    from engine.runtime.tensorrt_backend import tensorrt_backend

    gpu = int(device.split(":")[1]) if device and ":" in device else 0
    return tensorrt_backend(runtime, vdir, precision, max_batch, device=gpu, progress=progress)
