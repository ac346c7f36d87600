"""Engine-only throughput: images/s and ms/image p50/p99 at batch 1, 8, 32 on this CPU.

    .venv/bin/python -m bench.engine [--threads 2] [--input-size 320] [--no-onnx]
        [--context-frames 64]

Builds a 1-shot runtime from a synthetic reference (the bank size is what a real
1-shot model has), then times the torch module and, if available, its ONNX export
under onnxruntime, and both again scoring with a full line context (--context-frames,
default 64: engine.line_context; onnxruntime = the context-stage graph + torch search).
Writes bench/results/engine.json. Never asserted on in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.builder import ScoringConfig, build_runtime

RESULTS = Path(__file__).parent / "results" / "engine.json"


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _time(fn: object, frames: np.ndarray, batch: int, iters: int) -> dict[str, float]:
    x = frames[:batch]
    fn(x)  # warm-up (allocations, onnxruntime graph optimisation)
    per_batch = []
    for _ in range(iters):
        t = time.perf_counter()
        fn(x)
        per_batch.append(time.perf_counter() - t)
    ms_img = np.array(per_batch) * 1000 / batch
    return {
        "batch": batch, "iters": iters, "images_per_s": batch * iters / sum(per_batch),
        "ms_per_image_p50": float(np.percentile(ms_img, 50)),
        "ms_per_image_p99": float(np.percentile(ms_img, 99)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0, help="time budget per setting")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--context-frames", type=int, default=64,
                    help="also time scoring with a full line context of this many frames (0: off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ScoringConfig() if args.input_size is None else ScoringConfig(input_size=args.input_size)
    size = cfg.input_size
    rt = build_runtime([_frames(1, size, 1)[0]], cfg)
    frames = _frames(32, size)
    batches = [int(b) for b in args.batches.split(",")]

    @torch.no_grad()
    def torch_fn(x: np.ndarray) -> object:
        return rt(torch.from_numpy(x))

    backends = {"torch": torch_fn}
    if not args.no_onnx:
        import onnxruntime as ort

        path = Path(tempfile.mkdtemp()) / "engine.onnx"
        torch.onnx.export(rt, (torch.from_numpy(frames[:2]),), str(path),
                          input_names=["frames"], output_names=["scores", "maps"],
                          dynamic_axes={"frames": {0: "n"}, "scores": {0: "n"}, "maps": {0: "n"}},
                          opset_version=17, dynamo=False)  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        backends["onnxruntime"] = lambda x: sess.run(None, {"frames": x})
    if args.context_frames:
        from engine.line_context import ContextConfig, embed, score_with_context

        ccfg = ContextConfig(max_frames=args.context_frames)
        ctx_frames = _frames(args.context_frames, size, 2)
        context = [e for i in range(0, len(ctx_frames), 8)
                   for e in embed(rt, torch.from_numpy(ctx_frames[i : i + 8]))[1]]  # fmt: skip

        @torch.no_grad()
        def torch_ctx(x: np.ndarray) -> object:
            return score_with_context(rt, torch.from_numpy(x), context, ccfg)

        backends[f"torch+context{args.context_frames}"] = torch_ctx
        if not args.no_onnx:
            from engine.runtime.context_stage import OnnxContextStage

            stage = OnnxContextStage(rt, intra_op_threads=args.threads)

            @torch.no_grad()
            def ort_ctx(x: np.ndarray) -> object:
                return score_with_context(rt, torch.from_numpy(x), context, ccfg, stage)

            backends[f"onnxruntime+context{args.context_frames}"] = ort_ctx

    rows = []
    for name, fn in backends.items():
        for b in batches:
            t = time.perf_counter()
            fn(frames[:b])
            one = time.perf_counter() - t
            iters = max(3, min(50, int(args.seconds / max(one, 1e-3))))
            row = {"backend": name, **_time(fn, frames, b, iters)}
            rows.append(row)
            print(f"{name:12s} batch {b:3d}: {row['images_per_s']:7.1f} img/s  "
                  f"p50 {row['ms_per_image_p50']:7.1f} ms/img  "
                  f"p99 {row['ms_per_image_p99']:7.1f} ms/img", flush=True)  # fmt: skip
    out = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "torch": torch.__version__, "input_size": size, "frame_size": size,
        "bank_size": int(rt.bank.shape[0]), "context_frames": args.context_frames,
        "config": cfg.model_dump(mode="json"), "rows": rows,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
