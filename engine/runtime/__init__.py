"""Runtime backends for the exported CLAD scoring model: torch, onnxruntime, openvino, tensorrt.

Light on import: backends (and openvino, tensorrt/pycuda) are imported when one is made.
"""

from engine.runtime.protocol import BackendUnavailableError, InferenceBackend, pipelined
from engine.runtime.select import BackendKind, make_backend, resolve_kind

__all__ = [
    "BackendKind",
    "BackendUnavailableError",
    "InferenceBackend",
    "make_backend",
    "pipelined",
    "resolve_kind",
]
