"""TensorRT FP16 engine vs the torch reference (CPU, FP32) on real images.

Skips, saying why, where tensorrt or pycuda is not installed or there is no CUDA GPU.
Bounds (issue 6): max |Δscore| < 1e-2 and identical verdicts at the operating threshold.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.backend_parity_data import operating_threshold, parity_case, verdicts

pytestmark = pytest.mark.gpu


def _skip_reason() -> str | None:
    for module in ("tensorrt", "pycuda"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed (pip install 'clad-line[gpu]')"
    from engine.runtime.tensorrt_build import cuda_device_count

    if cuda_device_count() == 0:  # asked of the driver: torch may be the CPU build
        return "no CUDA GPU"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_tensorrt() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def case(shared_data: Path) -> tuple:
    return parity_case(shared_data, "bottle")


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bottle-v1")


def test_fp16_engine_matches_torch(case: tuple, version_dir: Path) -> None:
    from engine.runtime import InferenceBackend, make_backend
    from engine.runtime.torch_backend import TorchBackend

    runtime, frames, labels = case
    ref_scores, _ = TorchBackend(runtime, max_batch=8).infer(frames)
    messages: list[str] = []
    trt = make_backend("tensorrt", runtime, version_dir=version_dir, max_batch=8,
                       precision="fp16", progress=messages.append)  # fmt: skip
    assert isinstance(trt, InferenceBackend) and trt.name == "tensorrt-fp16"
    scores, maps = trt.infer(frames)  # 16 frames over max batch 8: both slots in use
    assert maps.shape == (len(frames), *frames.shape[1:3]) and maps.dtype == np.float32
    diff = float(np.abs(scores - ref_scores).max())
    assert diff < 1e-2, f"max |score diff| {diff:.3g}"
    threshold = operating_threshold(ref_scores, labels)
    np.testing.assert_array_equal(verdicts(scores, threshold), verdicts(ref_scores, threshold))
    assert any("building" in m for m in messages)


def test_engine_cached_and_pipelined(case: tuple, version_dir: Path) -> None:
    from engine.runtime import make_backend, pipelined
    from engine.runtime.engine_cache import cached_keys

    runtime, frames, _ = case
    messages: list[str] = []
    trt = make_backend("tensorrt", runtime, version_dir=version_dir, max_batch=8,
                       precision="fp16", progress=messages.append)  # fmt: skip
    assert any("cached" in m for m in messages), messages  # built by the previous test
    assert len(cached_keys(version_dir)) == 1
    whole = trt.infer(frames)[0]
    batches = [frames[i : i + 3] for i in range(0, len(frames), 3)]
    piped = np.concatenate([s for s, _ in pipelined(trt, iter(batches))])
    np.testing.assert_allclose(piped, whole, rtol=0, atol=1e-3)


def test_auto_picks_tensorrt() -> None:
    from engine.runtime import resolve_kind

    assert resolve_kind("auto") == "tensorrt"
