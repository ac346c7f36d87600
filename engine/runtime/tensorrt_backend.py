"""TensorRT backend: runs a serialized engine with pycuda.

Pinned host buffers and device buffers are allocated once, for the engine's
maximum batch; copy in, inference and copy out are queued on one CUDA stream and
`submit` returns at once. Two buffer slots let the caller submit batch i+1 (and
decode batch i+2 on the CPU) while batch i is still on the GPU — see
protocol.pipelined. tensorrt and pycuda are imported only when this is built.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from engine.runtime.engine_cache import Precision, ProgressFn, load_or_build
from engine.runtime.export import INPUT_NAME, OUTPUT_NAMES, ensure_onnx, export_onnx
from engine.runtime.protocol import check_frames, chunks
from engine.runtime.tensorrt_build import build_engine, engine_key, require_gpu

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    """One set of I/O buffers: pinned host arrays and device memory sized for Bmax."""

    host_in: np.ndarray
    host_scores: np.ndarray
    host_maps: np.ndarray
    dev_in: Any
    dev_scores: Any
    dev_maps: Any
    done: Any  # cuda.Event recorded after the copy out
    owner: Pending | None = None  # the batch whose results these buffers hold (None = free)


class Pending:
    """A submitted batch; `wait()` blocks until its results are on the host."""

    def __init__(self, backend: TensorRTBackend, slot: _Slot, n: int) -> None:
        self._backend, self._slot, self._n = backend, slot, n
        self._result: tuple[np.ndarray, np.ndarray] | None = None

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        if self._result is None:
            with self._backend._context():
                self._slot.done.synchronize()
            n = self._n
            # copies: the pinned buffers are reused by the batch after next
            self._result = (self._slot.host_scores[:n].copy(), self._slot.host_maps[:n].copy())
            self._slot.owner = None
        return self._result


class TensorRTBackend:
    """InferenceBackend over a deserialized engine (one context, one stream, two slots)."""

    def __init__(self, engine_bytes: bytes, precision: Precision = "fp16", device: int = 0) -> None:
        trt, cuda = require_gpu()
        self._cuda = cuda
        # the primary context is the one torch uses too: both can live in one process
        self._ctx = cuda.Device(device).retain_primary_context()
        with self._context():
            self._trt_logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._trt_logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise RuntimeError("could not deserialize the TensorRT engine (other TRT version?)")
            self.exec_context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            _, _, biggest = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
            self.max_batch = int(biggest[0])
            self.frame_size = (int(biggest[1]), int(biggest[2]))
            self._slots = [self._allocate(trt, cuda) for _ in range(2)]
        self._next = 0
        self.name = f"tensorrt-{precision}"

    @contextmanager
    def _context(self) -> Iterator[None]:
        # pycuda needs its context current on the calling thread (workers may switch)
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _allocate(self, trt: Any, cuda: Any) -> _Slot:
        b, (h, w) = self.max_batch, self.frame_size
        names = (INPUT_NAME, *OUTPUT_NAMES)
        dtype = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}
        host_in = cuda.pagelocked_empty((b, h, w, 3), dtype[INPUT_NAME])
        host_scores = cuda.pagelocked_empty((b,), dtype["scores"])
        host_maps = cuda.pagelocked_empty((b, h, w), dtype["maps"])
        return _Slot(host_in=host_in, host_scores=host_scores, host_maps=host_maps,
                     dev_in=cuda.mem_alloc(host_in.nbytes),
                     dev_scores=cuda.mem_alloc(host_scores.nbytes),
                     dev_maps=cuda.mem_alloc(host_maps.nbytes), done=cuda.Event())  # fmt: skip

    def submit(self, frames: np.ndarray) -> Pending:
        """Queue one batch (<= max_batch) and return at once."""
        frames = check_frames(frames, self.frame_size)
        n = frames.shape[0]
        if n > self.max_batch:
            raise ValueError(f"batch of {n} > engine max batch {self.max_batch}; use infer()")
        slot = self._slots[self._next]
        self._next ^= 1
        cuda, ctx = self._cuda, self.exec_context
        with self._context():
            if slot.owner is not None:  # its batch is not collected yet: save its results
                slot.owner.wait()
            np.copyto(slot.host_in[:n], frames)
            cuda.memcpy_htod_async(slot.dev_in, slot.host_in[:n], self.stream)
            ctx.set_input_shape(INPUT_NAME, (n, *self.frame_size, 3))
            ctx.set_tensor_address(INPUT_NAME, int(slot.dev_in))
            ctx.set_tensor_address("scores", int(slot.dev_scores))
            ctx.set_tensor_address("maps", int(slot.dev_maps))
            if not ctx.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT enqueue failed")
            cuda.memcpy_dtoh_async(slot.host_scores[:n], slot.dev_scores, self.stream)
            cuda.memcpy_dtoh_async(slot.host_maps[:n], slot.dev_maps, self.stream)
            slot.done.record(self.stream)
        slot.owner = Pending(self, slot, n)
        return slot.owner

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = check_frames(frames, self.frame_size)
        # every chunk is queued at once; a slot's earlier results are saved before reuse
        handles = [self.submit(c) for c in chunks(frames, self.max_batch)]
        parts = [h.wait() for h in handles]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def device_memory(self) -> tuple[int, int]:
        """(free, total) bytes on this backend's GPU."""
        with self._context():
            return self._cuda.mem_get_info()

    def close(self) -> None:
        with self._context():
            self.stream.synchronize()
            for slot in self._slots:
                for mem in (slot.dev_in, slot.dev_scores, slot.dev_maps):
                    mem.free()
        self._slots = []
        self._ctx.detach()


def tensorrt_backend(
    runtime: nn.Module,
    version_dir: str | Path | None,
    precision: Precision = "fp16",
    max_batch: int = 32,
    opt_batch: int | None = None,
    device: int = 0,
    progress: ProgressFn | None = None,
) -> TensorRTBackend:
    """Export (or reuse) the ONNX file, load or build the engine for this GPU, run it."""
    trt, cuda = require_gpu()  # fail before a slow export when the GPU stack is absent
    if version_dir is not None:
        exp = ensure_onnx(runtime, version_dir)
        onnx_bytes = exp.path.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            exp = export_onnx(runtime, Path(tmp) / "model.onnx")
            onnx_bytes = exp.path.read_bytes()
    opt = opt_batch or max(1, min(8, max_batch))  # the worker's usual micro-batch
    key = engine_key(trt, cuda, exp.model_hash, exp.frame_size, precision, max_batch, opt, device)

    def build() -> bytes:
        return build_engine(onnx_bytes, exp.frame_size, precision, max_batch, opt,
                            progress=progress)  # fmt: skip

    data, _ = load_or_build(version_dir, key, build, progress)
    return TensorRTBackend(data, precision=precision, device=device)
