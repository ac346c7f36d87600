"""Reference backend: the CladRuntime nn.Module itself, on CPU or CUDA.

Every other backend is tested against this one on CPU in FP32.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from engine.runtime.protocol import BackendUnavailableError, check_frames, infer_chunked


class TorchBackend:
    """Runs the module eagerly; `fp16=True` wraps CUDA inference in autocast."""

    def __init__(
        self,
        runtime: nn.Module,
        device: str = "cpu",
        fp16: bool = False,
        max_batch: int = 32,
        threads: int | None = None,
    ) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch backend on CUDA asked for, but no CUDA GPU")
        if fp16 and dev.type != "cuda":
            # CPU autocast is bfloat16 and slower than FP32 on most CPUs: refuse, not guess
            raise ValueError("fp16 autocast is for CUDA; use fp16=False on CPU")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide in torch: the caller's choice
        self.device, self.fp16, self.max_batch = dev, fp16, int(max_batch)
        # a copy on the GPU: moving the caller's module would change it under their feet
        self.runtime = (runtime if dev.type == "cpu" else copy.deepcopy(runtime)).eval().to(dev)
        suffix = "" if dev.type == "cpu" else f"-{dev.type}{'-fp16' if fp16 else ''}"
        self.name = f"torch{suffix}"

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.fp16):
            out = self.runtime(x)
        # outputs leave the backend as float32 whatever precision ran inside
        return (out.scores.float().cpu().numpy(), out.maps.float().cpu().numpy())

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return infer_chunked(self._run, check_frames(frames), self.max_batch)
