"""Engine-only throughput per runtime backend and batch size.

    .venv/bin/python -m bench.backends [--size 320] [--batches 1 8 32] [--threads 2]
        [--backends torch onnxruntime] [--seconds 4] [--context-frames 64]
        [--json bench/results/backends.json]

Builds a production-default model (1 reference of mvtec-sample/bottle, shifted
views in the bank) at --size px, then times `backend.infer(batch)` on real test
frames: images/s (frames / total time), ms per batch p50 and p99 (nearest rank;
with few repetitions p99 is the slowest one), and on CUDA the GPU memory in use.
Batch 128 is added on a GPU. Each point runs at least 3 times after one warm-up,
then until --seconds have passed. With --context-frames N each backend is timed again
through the worker's engine (workers.streaming.scoring.CladRuntimeEngine) with a full N-frame
line context, as the worker scores by default. Figures are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from engine.runtime import make_backend
from engine.runtime.protocol import InferenceBackend
from engine.runtime.select import tensorrt_usable
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.training.datasets import load_rgb, split_category

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def time_backend(
    backend: InferenceBackend, frames: np.ndarray, batch: int, seconds: float
) -> dict[str, float]:
    x = np.ascontiguousarray(np.resize(frames, (batch, *frames.shape[1:])))  # tile real frames
    backend.infer(x)  # warm-up: allocations, lazy init, kernel selection
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - t0)
    return {
        "images_per_s": round(batch * len(times) / sum(times), 2),
        "ms_per_batch_p50": round(1e3 * percentile(times, 50), 2),
        "ms_per_batch_p99": round(1e3 * percentile(times, 99), 2),
        "reps": len(times),
    }


def gpu_memory_mb(backend: InferenceBackend) -> float | None:
    if hasattr(backend, "device_memory"):  # TensorRT: device-wide use seen by the driver
        free, total = backend.device_memory()
        return round((total - free) / 2**20, 1)
    if backend.name.startswith("torch-cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def _print_row(row: dict) -> None:
    print(
        f"{row['backend']:>26} batch {row['batch']:>3}: {row['images_per_s']:>8.1f} img/s  "
        f"p50 {row['ms_per_batch_p50']:>8.1f} ms  p99 {row['ms_per_batch_p99']:>8.1f} ms"
        f"  ({row['reps']} reps)",
        flush=True,
    )


def with_full_context(runtime: object, backend: InferenceBackend, frames: np.ndarray,
                      n: int) -> InferenceBackend:
    """The worker's engine over `backend`, its line context already holding n frames."""
    from engine.scoring.line_context import ContextConfig, embed
    from workers.streaming.scoring import CladRuntimeEngine

    stage = None
    if backend.name.startswith("onnxruntime-cpu"):  # as the worker: a context-stage graph
        from engine.runtime.context_stage import OnnxContextStage

        stage = OnnxContextStage(runtime)
    engine = CladRuntimeEngine(runtime, threshold=float("inf"), version="bench",
                               backend=backend, context=ContextConfig(max_frames=n),
                               context_stage=stage)
    module, device = engine.context_module, engine.context_device
    tiled = np.resize(frames, (n, *frames.shape[1:]))
    with torch.inference_mode():
        for i in range(0, n, 8):
            _, embs = embed(module, torch.from_numpy(tiled[i : i + 8]).to(device))
            for e in embs:
                engine.line_context.offer(e, 0.0, engine.clock())
    engine.name = backend.name  # type: ignore[attr-defined]
    return engine  # type: ignore[return-value]


def gpu_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import pycuda.driver as cuda  # tensorrt without a CUDA build of torch

    cuda.init()
    return str(cuda.Device(0).name())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="torch onnxruntime torch-cuda tensorrt (default: all available)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch / onnxruntime CPU threads")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--context-frames", type=int, default=0,
                    help="also time each backend through the worker's engine with a full "
                         "line context of this many frames (0: off)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = ap.parse_args()

    torch_cuda, trt = torch.cuda.is_available(), tensorrt_usable()
    gpu = torch_cuda or trt
    batches = args.batches or ([1, 8, 32, 128] if gpu else [1, 8, 32])
    kinds = args.backends or (
        ["torch", "onnxruntime"]
        + (["torch-cuda"] if torch_cuda else [])
        + (["tensorrt"] if trt else [])
    )
    torch.set_num_threads(args.threads)
    cfg = ScoringConfig(input_size=args.size)
    split = split_category(args.data / "mvtec-sample" / args.category, shots=1)
    runtime = build_runtime([load_rgb(p, args.size) for p in split.references], cfg)
    frames = np.stack([load_rgb(s.path, args.size) for s in split.evaluated])
    max_batch = max(batches)
    results = []
    for kind in kinds:
        if kind == "torch-cuda":
            backend = make_backend(
                "torch", runtime, device="cuda", precision="fp16", max_batch=max_batch
            )
        else:
            backend = make_backend(
                kind,
                runtime,
                max_batch=max_batch,
                precision="fp16",  # type: ignore[arg-type]
                intra_op_threads=args.threads,
                progress=print,
            )
        for batch in batches:
            row = {
                "backend": backend.name,
                "batch": batch,
                **time_backend(backend, frames, batch, args.seconds),
                "gpu_memory_mb": gpu_memory_mb(backend),
            }
            results.append(row)
            _print_row(row)
        if args.context_frames:
            engine = with_full_context(runtime, backend, frames, args.context_frames)
            for batch in batches:
                row = {
                    "backend": f"{backend.name}+context{args.context_frames}",
                    "batch": batch,
                    **time_backend(engine, frames, batch, args.seconds),
                    "gpu_memory_mb": gpu_memory_mb(backend),
                }
                results.append(row)
                _print_row(row)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "gpu": gpu_name() if gpu else None,
        "size": args.size,
        "category": args.category,
        "bank_rows": int(runtime.bank.shape[0]),
    }
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
