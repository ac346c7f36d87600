"""Backends satisfy InferenceBackend; chunking, validation and backend selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.runtime import BackendUnavailableError, InferenceBackend, make_backend, pipelined
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend
from engine.runtime.protocol import check_frames
from engine.runtime.select import resolve_kind
from engine.runtime.torch_backend import TorchBackend

pytestmark = pytest.mark.unit
SIZE = 64  # also the side of the shared `runtime` fixture (conftest reads it)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ort_backend(runtime: torch.nn.Module) -> OnnxRuntimeBackend:
    return make_backend("onnxruntime", runtime, max_batch=2, intra_op_threads=1)  # type: ignore[return-value]


def test_torch_backend_satisfies_protocol(runtime: torch.nn.Module, frames: np.ndarray) -> None:
    backend = TorchBackend(runtime, max_batch=2)
    assert isinstance(backend, InferenceBackend)
    assert backend.name == "torch" and backend.max_batch == 2
    scores, maps = backend.infer(frames)
    assert scores.shape == (5,) and maps.shape == (5, SIZE, SIZE)
    assert scores.dtype == np.float32 and maps.dtype == np.float32


def test_onnxruntime_backend_satisfies_protocol(
    ort_backend: OnnxRuntimeBackend, runtime: torch.nn.Module, frames: np.ndarray
) -> None:
    assert isinstance(ort_backend, InferenceBackend)
    assert ort_backend.name == "onnxruntime-cpu" and ort_backend.frame_size == (SIZE, SIZE)
    scores, maps = ort_backend.infer(frames)  # 5 frames over max_batch 2: chunks 2, 2, 1
    with torch.no_grad():
        ref = runtime(torch.from_numpy(frames))
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-3)


def test_chunked_equals_whole_batch(ort_backend: OnnxRuntimeBackend, frames: np.ndarray) -> None:
    chunked = ort_backend.infer(frames)
    one_by_one = [ort_backend.infer(frames[i : i + 1]) for i in range(len(frames))]
    np.testing.assert_allclose(chunked[0], np.concatenate([s for s, _ in one_by_one]), atol=1e-5)


def test_pipelined_keeps_order(ort_backend: OnnxRuntimeBackend, frames: np.ndarray) -> None:
    batches = [frames[:2], frames[2:3], frames[3:]]
    got = list(pipelined(ort_backend, iter(batches)))
    assert [len(s) for s, _ in got] == [2, 1, 2]
    whole = ort_backend.infer(frames)[0]  # other chunking: equal up to float rounding
    np.testing.assert_allclose(np.concatenate([s for s, _ in got]), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, SIZE, SIZE, 3), np.float32), "uint8"),
        (np.zeros((SIZE, SIZE, 3), np.uint8), r"\[N, H, W, 3\]"),
        (np.zeros((0, SIZE, SIZE, 3), np.uint8), "empty"),
        (np.zeros((1, SIZE + 8, SIZE, 3), np.uint8), "resize"),
    ],
)
def test_bad_frames_rejected_clearly(
    ort_backend: OnnxRuntimeBackend, bad: np.ndarray, message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        ort_backend.infer(bad)


def test_check_frames_makes_contiguous() -> None:
    view = np.zeros((2, SIZE, SIZE * 2, 3), np.uint8)[:, :, ::2]
    assert check_frames(view, (SIZE, SIZE)).flags.c_contiguous


def test_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # auto on CPUs and openvino: tests/unit/engine/runtime/test_backend_select.py
    monkeypatch.setattr("engine.runtime.select.tensorrt_usable", lambda: False)
    assert resolve_kind("auto") == "onnxruntime"
    assert resolve_kind("torch") == "torch"
    monkeypatch.setattr("engine.runtime.select.tensorrt_usable", lambda: True)
    assert resolve_kind("auto") == "tensorrt"
    assert resolve_kind("onnxruntime") == "onnxruntime"


@pytest.mark.usefixtures("without_gpu_packages")
def test_tensorrt_without_packages_names_them(runtime: torch.nn.Module) -> None:
    with pytest.raises(BackendUnavailableError, match=r"pip install 'clad-line\[gpu\]'"):
        make_backend("tensorrt", runtime)


def test_torch_fp16_refused_on_cpu(runtime: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend(runtime, "cpu", fp16=True)


def test_model_dir_caches_onnx(
    runtime: torch.nn.Module, tmp_path: Path, frames: np.ndarray
) -> None:
    a = make_backend("onnxruntime", runtime, version_dir=tmp_path, intra_op_threads=1)
    files = list((tmp_path / "runtime").glob("*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = make_backend("onnxruntime", runtime, version_dir=tmp_path, intra_op_threads=1)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not re-exported
    np.testing.assert_array_equal(a.infer(frames)[0], b.infer(frames)[0])
