"""ONNX Runtime backend: the CPU path where OpenVINO is not installed, CUDA EP when present.

Depthwise convolutions (EfficientNet-Lite) are several times faster in ONNX Runtime's
CPU kernels than in eager torch, which is why this, not torch, is a CPU path. On CPU it
runs N sessions of fewer threads each with a batch split over them (parallel.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from engine.runtime.export import INPUT_NAME, OUTPUT_NAMES
from engine.runtime.parallel import PooledBackend, RequestPool
from engine.runtime.protocol import BackendUnavailableError

Device = Literal["auto", "cpu", "cuda"]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntimeBackend(PooledBackend):
    """`requests` InferenceSessions over an exported file (or its bytes); on CUDA one."""

    def __init__(
        self,
        model: str | Path | bytes,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        max_batch: int = 32,
        requests: int = 1,
    ) -> None:
        import onnxruntime as ort

        have = available_providers()
        cuda = "CUDAExecutionProvider" in have
        if device == "cuda" and not cuda:
            raise BackendUnavailableError(
                f"onnxruntime CUDA EP asked for but not available (providers: {have}); "
                "install onnxruntime-gpu"
            )
        use_cuda = device == "cuda" or (device == "auto" and cuda)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else [
            "CPUExecutionProvider"
        ]  # fmt: skip
        opts = ort.SessionOptions()
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1  # the graph is one chain: parallel branches buy nothing
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        # one GPU stream gains nothing from several sessions; CPU sessions do (parallel.py)
        n = 1 if use_cuda else max(1, int(requests))
        self.sessions = [ort.InferenceSession(source, opts, providers=providers)
                         for _ in range(n)]  # fmt: skip
        self.session = self.sessions[0]
        self.requests = n
        self._pool = RequestPool([self._runner(s) for s in self.sessions], "onnxruntime")
        inp = self.session.get_inputs()[0]
        outs = tuple(o.name for o in self.session.get_outputs())
        if inp.name != INPUT_NAME or outs != OUTPUT_NAMES:
            raise ValueError(f"not a clad export: input {inp.name}, outputs {outs}")
        h, w = inp.shape[1], inp.shape[2]
        self.frame_size = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        self.max_batch = int(max_batch)
        self.providers = self.session.get_providers()
        self.name = "onnxruntime-" + ("cuda" if self.providers[0].startswith("CUDA") else "cpu")

    @staticmethod
    def _runner(session: object) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
        def run(frames: np.ndarray) -> tuple[np.ndarray, ...]:
            scores, maps = session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames})  # type: ignore[attr-defined]
            return np.asarray(scores, np.float32), np.asarray(maps, np.float32)

        return run
