"""The OpenVINO backend: protocol, parity with torch fp32, compiled model cached beside
the ONNX file, requests in flight. Skipped where the openvino package is absent."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.runtime import InferenceBackend, make_backend, pipelined
from engine.runtime.openvino_backend import OpenVinoBackend, compile_config

pytest.importorskip("openvino")
pytestmark = pytest.mark.unit
SIZE = 64


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(runtime: torch.nn.Module, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = runtime(torch.from_numpy(frames))
    return out.scores.numpy(), out.maps.numpy()


@pytest.mark.parametrize("requests", [1, 2])
def test_openvino_backend_satisfies_protocol_and_matches_torch(
    runtime: torch.nn.Module,
    frames: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    requests: int,
) -> None:
    backend = make_backend("openvino", runtime, max_batch=2, requests=requests,
                           intra_op_threads=1)  # fmt: skip
    assert isinstance(backend, OpenVinoBackend) and isinstance(backend, InferenceBackend)
    assert backend.name == "openvino-cpu-fp32" and backend.max_batch == 2
    assert backend.requests == requests and backend.frame_size == (SIZE, SIZE)
    scores, maps = backend.infer(frames)  # 5 frames over max_batch 2: chunks 2, 2, 1
    assert scores.shape == (5,) and maps.shape == (5, SIZE, SIZE)
    assert scores.dtype == np.float32 and maps.dtype == np.float32
    np.testing.assert_allclose(scores, reference[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps, reference[1], rtol=0, atol=1e-3)
    got = list(pipelined(backend, iter([frames[:2], frames[2:3], frames[3:]])))
    assert [len(s) for s, _ in got] == [2, 1, 2]
    np.testing.assert_allclose(np.concatenate([s for s, _ in got]), reference[0],
                               rtol=0, atol=1e-4)  # fmt: skip


def test_bad_frames_rejected_clearly(runtime: torch.nn.Module) -> None:
    backend = make_backend("openvino", runtime, requests=1, intra_op_threads=1)
    with pytest.raises(ValueError, match="resize"):
        backend.infer(np.zeros((1, SIZE + 8, SIZE, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        backend.infer(np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_precision_is_pinned_to_fp32() -> None:
    """The CPU plugin's own default is bf16 where the CPU has it (scores moved ~5e-2)."""
    config = compile_config(requests=2, threads=1, precision="fp32")
    assert config["INFERENCE_PRECISION_HINT"] == "f32"
    assert config["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert config["NUM_STREAMS"] == "2" and config["INFERENCE_NUM_THREADS"] == "2"
    assert config["ENABLE_CPU_PINNING"] == "YES"
    assert compile_config(1, 2, "fp32", cpu_pinning=False)["ENABLE_CPU_PINNING"] == "NO"


def test_compiled_model_is_cached_beside_the_onnx_file(
    runtime: torch.nn.Module,
    tmp_path: Path,
    frames: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="engine.runtime.openvino_backend"):
        first = make_backend("openvino", runtime, version_dir=tmp_path, requests=2,
                             intra_op_threads=1)  # fmt: skip
    blobs = list((tmp_path / "runtime" / "openvino").glob("*.blob"))
    assert len(blobs) == 1 and blobs[0].with_suffix(".json").is_file()
    assert list((tmp_path / "runtime").glob("model-*.onnx"))
    assert "compiled OpenVINO model" in caplog.text
    mtime = blobs[0].stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.runtime.openvino_backend"):
        second = make_backend("openvino", runtime, version_dir=tmp_path, requests=2,
                              intra_op_threads=1)  # fmt: skip
    assert "using cached OpenVINO model" in caplog.text
    assert blobs[0].stat().st_mtime_ns == mtime  # imported, not compiled again
    assert second.requests == 2  # the import keeps the streams asked for
    s1, m1 = first.infer(frames)
    s2, m2 = second.infer(frames)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(s2, reference[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(m2, reference[1], rtol=0, atol=1e-3)
    # another requests setting is another compiled model, the first one is kept
    make_backend("openvino", runtime, version_dir=tmp_path, requests=1, intra_op_threads=1)
    assert len(list((tmp_path / "runtime" / "openvino").glob("*.blob"))) == 2
