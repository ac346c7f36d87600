"""Torch on CUDA with FP16 autocast vs CPU torch (FP32): identical verdicts.

Skips with "no CUDA GPU (or torch is the CPU build)" where torch sees none: this
repository pins the CPU build of torch; a GPU worker installs a CUDA build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.backend_parity_data import operating_threshold, parity_case, verdicts

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU (or torch is the CPU build)"
    ),
]


@pytest.mark.parametrize("category", ["bottle", "capsule"])
def test_cuda_fp16_verdicts_match_cpu(shared_data: Path, category: str) -> None:
    from engine.runtime import InferenceBackend
    from engine.runtime.torch_backend import TorchBackend

    runtime, frames, labels = parity_case(shared_data, category)
    cpu_scores, _ = TorchBackend(runtime, "cpu", max_batch=8).infer(frames)
    gpu = TorchBackend(runtime, "cuda", fp16=True, max_batch=8)
    assert isinstance(gpu, InferenceBackend) and gpu.name == "torch-cuda-fp16"
    scores, maps = gpu.infer(frames)
    assert scores.dtype == np.float32 and maps.shape == (len(frames), *frames.shape[1:3])
    threshold = operating_threshold(cpu_scores, labels)
    np.testing.assert_array_equal(verdicts(scores, threshold), verdicts(cpu_scores, threshold))
    print(f"{category}: max |Δscore| fp16-cuda vs fp32-cpu {np.abs(scores - cpu_scores).max():.2e}")
