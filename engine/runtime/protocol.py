"""The one interface every runtime backend (torch, onnxruntime, tensorrt) satisfies.

A `Protocol`, not a base class: the backends share no code path worth inheriting,
and a test checks each concrete class against it (STYLE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InferenceBackend(Protocol):
    """Scores uint8 RGB frames; higher score = more anomalous."""

    name: str  # "torch", "torch-cuda-fp16", "onnxruntime-cpu", "tensorrt-fp16", ...
    max_batch: int  # larger calls are split into chunks of at most this many frames

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, 3] -> (scores float32 [N], maps float32 [N, H, W])."""
        ...


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (missing package, no GPU)."""


GPU_EXTRA_HINT = "pip install 'clad-line[gpu]'  (tensorrt>=10 and pycuda)"


def check_frames(frames: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a batch and return it C-contiguous (copying only when it is not).

    `size` is the (H, W) the exported graph was built for; the torch module accepts
    any size, an engine does not, and a wrong size must fail here with a clear
    message rather than deep inside a runtime.
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got shape {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("empty batch")
    if size is not None and tuple(frames.shape[1:3]) != tuple(size):
        raise ValueError(
            f"frames are {frames.shape[1]}x{frames.shape[2]} but this backend was built for "
            f"{size[0]}x{size[1]}: resize to the model's input size first"
        )
    return np.ascontiguousarray(frames)


def chunks(frames: np.ndarray, max_batch: int) -> Iterator[np.ndarray]:
    """Consecutive slices of at most `max_batch` frames (views, no copy)."""
    for start in range(0, frames.shape[0], max_batch):
        yield frames[start : start + max_batch]


Outputs = tuple[np.ndarray, np.ndarray]


def infer_chunked(
    run: Callable[[np.ndarray], Outputs], frames: np.ndarray, max_batch: int
) -> Outputs:
    """Run `run(chunk) -> (scores, maps)` over chunks and concatenate the results."""
    if frames.shape[0] <= max_batch:
        return run(frames)
    parts = [run(c) for c in chunks(frames, max_batch)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def pipelined(
    backend: InferenceBackend, batches: Iterable[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Results of `batches` in order, overlapping the next batch's production with
    the current batch's inference where the backend can (`submit` -> handle.wait()).

    `batches` is typically a generator that decodes frames: with an asynchronous
    backend (TensorRT) the decode of batch i+1 runs on the CPU while the GPU works
    on batch i. Backends without `submit` simply run each batch in turn.
    """
    submit = getattr(backend, "submit", None)
    if submit is None:
        for batch in batches:
            yield backend.infer(batch)
        return
    pending = None
    for batch in batches:
        handle = submit(batch)  # returns at once; the GPU works while we decode the next
        if pending is not None:
            yield pending.wait()
        pending = handle
    if pending is not None:
        yield pending.wait()
