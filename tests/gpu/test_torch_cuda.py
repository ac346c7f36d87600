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


def test_line_context_scores_on_the_gpu(shared_data: Path) -> None:
    """A GPU worker with line context (the default) scores on the GPU, not on the CPU
    module, and flags the same frames as the CPU path."""
    from engine.runtime.torch_backend import TorchBackend
    from engine.scoring.line_context import ContextConfig
    from workers.streaming.scoring import CladRuntimeEngine

    runtime, frames, labels = parity_case(shared_data, "bottle")
    plain, _ = TorchBackend(runtime, "cpu").infer(frames)

    def stream(backend: object) -> tuple[CladRuntimeEngine, np.ndarray]:
        engine = CladRuntimeEngine(runtime, threshold=operating_threshold(plain, labels),
                                   version="v1", backend=backend, context=ContextConfig())
        scores = [engine.infer(frames[i : i + 4])[0] for i in range(0, len(frames), 4)]
        return engine, np.concatenate(scores)

    cpu, cpu_scores = stream(None)
    gpu, gpu_scores = stream(TorchBackend(runtime, "cuda", fp16=True, max_batch=8))
    context = gpu.line_context.items(gpu.clock())
    assert len(context) == len(cpu.line_context) >= ContextConfig().min_frames
    assert {e.image.device.type for e in context} == {"cuda"}
    cut = operating_threshold(cpu_scores, labels)
    np.testing.assert_array_equal(verdicts(gpu_scores, cut), verdicts(cpu_scores, cut))
    delta = np.abs(gpu_scores - cpu_scores).max()
    print(f"context: max |Δscore| fp16-cuda vs fp32-cpu {delta:.2e}")
