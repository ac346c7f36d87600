"""Choose and build a runtime backend for a model (the choice is an argument, never env).

auto = tensorrt where a CUDA GPU and the tensorrt + pycuda packages are present,
else onnxruntime (CPU EP, or CUDA EP if that build of onnxruntime is installed).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

from torch import nn

from engine.runtime.engine_cache import Precision, ProgressFn
from engine.runtime.protocol import InferenceBackend

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "tensorrt", "onnxruntime", "torch"]


def tensorrt_usable() -> bool:
    """tensorrt and pycuda installed and the CUDA driver sees a GPU."""
    from engine.runtime.tensorrt_build import cuda_device_count, gpu_packages_present

    return gpu_packages_present() and cuda_device_count() > 0


def resolve_kind(kind: BackendKind) -> Literal["tensorrt", "onnxruntime", "torch"]:
    if kind != "auto":
        return kind
    return "tensorrt" if tensorrt_usable() else "onnxruntime"


def _runtime_and_dir(model: nn.Module | str | Path) -> tuple[nn.Module, Path | None]:
    if isinstance(model, nn.Module):
        return model, None
    from engine.artifacts import load_model, resolve

    version_dir = resolve(model)
    return load_model(version_dir).runtime, version_dir


def make_backend(
    kind: BackendKind,
    model: nn.Module | str | Path,
    *,
    version_dir: str | Path | None = None,
    max_batch: int = 32,
    precision: Precision = "fp16",
    intra_op_threads: int | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> InferenceBackend:
    """A backend for `model`: a CladRuntime, or a saved model version directory.

    Exported ONNX files and TensorRT engines are cached under the version directory
    (given, or the one `model` was loaded from); without one they are rebuilt in a
    temporary directory each time. `precision` applies to tensorrt and to torch on
    CUDA; onnxruntime and CPU torch always run FP32.
    """
    runtime, loaded_dir = _runtime_and_dir(model)
    vdir = Path(version_dir) if version_dir is not None else loaded_dir
    chosen = resolve_kind(kind)
    log.info("runtime backend: %s (asked: %s)", chosen, kind)
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
            return OnnxRuntimeBackend(path, ort_device, intra_op_threads, max_batch)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as tmp:
            data = export_onnx(runtime, Path(tmp) / "model.onnx").path.read_bytes()
        return OnnxRuntimeBackend(data, ort_device, intra_op_threads, max_batch)  # type: ignore[arg-type]
    from engine.runtime.tensorrt_backend import tensorrt_backend

    gpu = int(device.split(":")[1]) if device and ":" in device else 0
    return tensorrt_backend(runtime, vdir, precision, max_batch, device=gpu, progress=progress)
