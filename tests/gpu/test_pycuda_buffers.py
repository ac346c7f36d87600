"""The TensorRT backend's pycuda half on a real GPU, with TensorRT replaced by a CUDA kernel.

TensorRT's wheels are too big to reach every GPU box this is checked on, but the
buffer handling around the engine is pycuda alone: pinned host arrays, device
memory, one stream, events, the two slots and the context pushed on the calling
thread. Here the "engine" is a kernel compiled with pycuda that writes known
outputs (score = mean of the red channel, map = the red channel, both / 255) after
spinning for a few milliseconds, so a result read before its batch ran, or a slot
reused while its results were still needed, shows up as wrong numbers.

Skips, saying why, where pycuda is not installed or no CUDA GPU is visible.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

import numpy as np
import pytest

from tests.tensorrt_stand_ins import RecordingContext

pytestmark = pytest.mark.gpu
SIDE, MAX_BATCH = 48, 4
SPIN_CYCLES = 20_000_000  # ~10 ms at GPU clocks: long enough to lose a race without a sync

KERNEL = r"""
__global__ void fake_engine(const unsigned char* frames, float* scores, float* maps,
                            int pixels, long long spin)
{
    __shared__ float total;
    const int i = blockIdx.x;  // one block per frame
    if (threadIdx.x == 0) {
        total = 0.0f;
        long long start = clock64();
        while (clock64() - start < spin) { }
    }
    __syncthreads();
    float acc = 0.0f;
    for (int p = threadIdx.x; p < pixels; p += blockDim.x) {
        float v = frames[((size_t)i * pixels + p) * 3] / 255.0f;
        maps[(size_t)i * pixels + p] = v;
        acc += v;
    }
    atomicAdd(&total, acc);
    __syncthreads();
    if (threadIdx.x == 0) scores[i] = total / pixels;
}
"""


def _skip_reason() -> str | None:
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda not installed (pip install 'clad-line[gpu]')"
    from engine.runtime.tensorrt_build import cuda_device_count

    if cuda_device_count() == 0:
        return "no CUDA GPU"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_pycuda() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


class KernelContext(RecordingContext):
    """Stands in for a TensorRT execution context: launches the kernel on the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stream: Any = None  # the backend's pycuda stream, set once it exists
        self._kernel: Any = None

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == self.stream.handle, "enqueued on another stream"
        if self._kernel is None:  # compiled here: the backend's context is current
            from pycuda.compiler import SourceModule

            self._kernel = SourceModule(KERNEL).get_function("fake_engine")
        n, h, w, _ = self.shape
        self._kernel(np.uintp(self.addr["frames"]), np.uintp(self.addr["scores"]),
                     np.uintp(self.addr["maps"]), np.int32(h * w), np.int64(SPIN_CYCLES),
                     block=(256, 1, 1), grid=(n, 1), stream=self.stream)  # fmt: skip
        return True


def kernel_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "kernel-stand-in"
    trt.nptype = lambda t: np.dtype(t).type
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    dtypes = {"frames": "uint8", "scores": "float32", "maps": "float32"}
    engine = types.SimpleNamespace(
        get_tensor_profile_shape=lambda name, k: [(1, SIDE, SIDE, 3), (2, SIDE, SIDE, 3),
                                                   (MAX_BATCH, SIDE, SIDE, 3)],
        get_tensor_dtype=dtypes.__getitem__,
        create_execution_context=KernelContext,
    )  # fmt: skip
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda b: engine)
    return trt


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "tensorrt", kernel_tensorrt())
    from engine.runtime.tensorrt_backend import TensorRTBackend

    b = TensorRTBackend(b"unused", precision="fp16")
    b.exec_context.stream = b.stream
    yield b
    b.close()


def expected(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    red = frames[..., 0].astype(np.float32) / 255.0
    return red.reshape(len(frames), -1).mean(axis=1), red


def batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8)


def test_three_batches_in_flight_reuse_slots_safely(backend: Any) -> None:
    a, b, c = batch(3, 1), batch(4, 2), batch(2, 3)
    pa, pb = backend.submit(a), backend.submit(b)
    pc = backend.submit(c)  # takes a's slot: a's results must be saved first
    for frames, pending in ((c, pc), (b, pb), (a, pa)):  # collected out of order
        scores, maps = pending.wait()
        want_scores, want_maps = expected(frames)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-4)
        np.testing.assert_array_equal(maps, want_maps)


def test_infer_splits_batches_larger_than_the_engine(backend: Any) -> None:
    frames = batch(MAX_BATCH * 2 + 1, 4)
    scores, maps = backend.infer(frames)
    want_scores, want_maps = expected(frames)
    assert scores.shape == (len(frames),) and maps.shape == (len(frames), SIDE, SIDE)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4)
    np.testing.assert_array_equal(maps, want_maps)


def test_results_collected_on_another_thread(backend: Any) -> None:
    frames = batch(MAX_BATCH, 5)
    pending = backend.submit(frames)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", pending.wait()))
    worker.start()
    worker.join(timeout=60)
    scores, _ = out["r"]
    np.testing.assert_allclose(scores, expected(frames)[0], rtol=1e-4)
    free, total = backend.device_memory()
    assert 0 < free <= total
