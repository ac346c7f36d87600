"""Where a batch's milliseconds go on the line-context path, step by step.

    .venv/bin/python -m bench.context_profile [--batch 8] [--frames 32] [--reps 5] [--path old|new]

The worker's default CPU path (context stage under onnxruntime, 1 request with every
core, then the context search in torch) on one batch of real frames (1 reference of
mvtec-sample/bottle, 320 px, a full context of `--frames` frames), each step timed on
its own with both the wall clock and the process CPU clock (all threads of this
process: on a shared machine the CPU time is the steadier figure). Beside each step:
its arithmetic (GFLOP) and memory traffic (MB) and the floor they give on this CPU
at the GEMM rate and the copy bandwidth measured in the same run. `--path old` times
the steps of the search before issue 33 (per-frame einsum over stacked context),
`--path new` the ContextIndex steps. Prints a table and writes JSON; never asserted on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.engine import SHARED, context_of, load_frames, tile
from engine.runtime.parallel import cpu_cores
from engine.scoring import line_context as lc
from engine.scoring.builder import ScoringConfig, build_runtime

ROOT = Path(__file__).resolve().parents[1]


def clocked(fn: Callable[[], object], reps: int) -> tuple[float, float, object]:
    """(median wall ms, median process-CPU ms, last result) over `reps` calls."""
    walls, cpus, out = [], [], None
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append((time.perf_counter() - w) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return statistics.median(walls), statistics.median(cpus), out


def gemm_rate(reps: int) -> float:
    """GFLOP/s of one fp32 GEMM of the search's shape ([3200, 112] x [112, 6400])."""
    a, b = torch.randn(3200, 112), torch.randn(112, 6400)
    out = torch.empty(3200, 6400)
    torch.mm(a, b, out=out)
    wall, _, _ = clocked(lambda: torch.mm(a, b, out=out), reps)
    return 2 * 3200 * 6400 * 112 / wall / 1e6


def copy_rate(reps: int) -> float:
    """GB/s of a large copy (read + write counted)."""
    src, dst = torch.randn(64 << 20 >> 2), torch.empty(64 << 20 >> 2)
    wall, _, _ = clocked(lambda: dst.copy_(src), reps)
    return 2 * src.numel() * 4 / wall / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=32, help="context frames")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--path", choices=("old", "new"), default="new")
    ap.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "context_profile.json"
    )
    args = ap.parse_args()
    cores = cpu_cores()
    torch.set_num_threads(cores)
    refs, frames = load_frames(SHARED, "bottle", 320)
    rt = build_runtime(refs, ScoringConfig(input_size=320))
    from engine.runtime.context_stage import OnnxContextStage

    stage = OnnxContextStage(rt, None, cores, requests=1)
    context = context_of(rt, frames, args.frames)
    cfg = lc.ContextConfig(max_frames=args.frames)
    x = torch.from_numpy(tile(frames[::-1].copy(), args.batch))
    n, reps = args.batch, args.reps
    rows: list[tuple[str, float, float, float, float]] = []  # step, wall, cpu, GFLOP, MB

    w, c, (emb, pemb, amap, pmap) = clocked(lambda: stage(x), reps)
    rows.append(("context stage (ONNX: trunk, embeddings, bank search)", w, c, math.nan, math.nan))
    _, ch, h, wd = emb.shape
    p = h * wd
    s = min(cfg.search_frames or args.frames, args.frames)
    feats = [emb]
    size = int(rt.input_size)
    w, c, _ = clocked(lambda: rt.finish(feats, rt.w_visual * amap, None, size, size), reps)
    rows.append(("reference-only score (finish of the bank map)", w, c, math.nan, math.nan))
    search_flop = 2 * n * p * s * p * ch / 1e9
    if args.path == "old":
        w, c, ctx = clocked(lambda: torch.stack([e.image for e in context]), reps)
        w2, c2, pctx = clocked(lambda: torch.stack([e.pixel for e in context]), reps)
        mb = 2 * 2 * ctx.numel() * 4 / 1e6
        rows.append(("copies: stack the context (2 maps)", w + w2, c + c2, 0.0, mb))
        w, c, picks = clocked(lambda: lc.pick_frames(emb, ctx, cfg), reps)
        rows.append(("picks (descriptors + [N, M] cosine + top-k)", w, c, math.nan, math.nan))
        gathered: list[tuple[torch.Tensor, torch.Tensor]] = []

        def gather() -> None:
            gathered.clear()
            gathered.extend((ctx[i], pctx[i]) for i in picks)

        w, c, _ = clocked(gather, reps)
        rows.append(("copies: context[picks] per frame (2 maps)", w, c, 0.0,
                     2 * 2 * n * s * p * ch * 4 / 1e6))  # fmt: skip

        def sims() -> list[torch.Tensor]:
            out = []
            for i in range(n):
                for e, g in ((emb, gathered[i][0]), (pemb, gathered[i][1])):
                    q = e[i : i + 1].flatten(2).transpose(1, 2)
                    out.append(torch.einsum("npc,mqc->nmpq", q, g.flatten(2).transpose(1, 2)))
            return out

        w, c, sim = clocked(sims, reps)
        rows.append(("search: einsum per frame (2 maps)", w, c, 2 * search_flop,
                     2 * n * s * p * p * 4 / 1e6))  # fmt: skip
        w, c, dist = clocked(lambda: [1.0 - t.amax(dim=-1) for t in sim], reps)
        rows.append(("reduction: nearest per context frame (amax)", w, c, math.nan,
                     2 * n * s * p * p * 4 / 1e6))  # fmt: skip
        w, c, red = clocked(
            lambda: [lc.reduce_context(d, cfg.share, args.frames) for d in dist], reps
        )
        rows.append(("reduction: mean of the smallest share (top-k)", w, c, math.nan, math.nan))
        actx = torch.cat(red[0::2]).reshape(n, h, wd) / rt.scale
        pc = torch.cat(red[1::2]).reshape(n, h, wd) / rt.pixel_scale
    else:
        index = lc.ContextIndex()
        w, c, _ = clocked(lambda: index.sync(context), 1)
        rows.append(("context index: first fill (once per frame admitted, not per call)",
                     w / args.frames, c / args.frames, 0.0, math.nan))  # fmt: skip
        w, c, picks = clocked(lambda: index.pick(emb, cfg), reps)
        rows.append(("picks ([N, M] cosine + top-k)", w, c, math.nan, math.nan))
        w, c, (actx, pc) = clocked(lambda: index.distances(emb, pemb, picks, cfg), reps)
        rows.append(("search + fused reductions (2 maps)", w, c, 2 * search_flop, math.nan))
        actx = actx.reshape(n, h, wd) / rt.scale
        pc = pc.reshape(n, h, wd) / rt.pixel_scale
    w, c, fused = clocked(
        lambda: (lc.fuse(amap, actx, cfg.floor), lc.fuse(pmap, pc, cfg.floor)), reps
    )
    rows.append(("fusion (min with the reference maps)", w, c, math.nan, math.nan))
    w, c, _ = clocked(lambda: rt.finish(feats, rt.w_visual * fused[0], rt.w_visual * fused[1],
                                        *x.shape[1:3]), reps)  # fmt: skip
    rows.append(("maps + top-k score (finish)", w, c, math.nan, math.nan))

    gflops, gbs = gemm_rate(reps), copy_rate(reps)
    total_w = sum(r[1] for r in rows[:1] + rows[2:] if not r[0].startswith("context index"))
    total_c = sum(r[2] for r in rows[:1] + rows[2:] if not r[0].startswith("context index"))
    print(f"batch {n}, {args.frames} context frames, {s} searched, P={p}, C={ch}, {cores} cores, "
          f"load {os.getloadavg()[0]:.2f}; GEMM {gflops:.0f} GFLOP/s, copy {gbs:.1f} GB/s "
          f"(measured now); path {args.path}")  # fmt: skip
    print("| step | wall ms | CPU ms | GFLOP | MB moved | floor ms |\n|---|---|---|---|---|---|")
    out = []
    for name, w, c, gf, mb in rows:
        floor = max(gf / gflops * 1e3 if gf == gf else 0.0, mb / gbs if mb == mb else 0.0)
        print(f"| {name} | {w:.1f} | {c:.1f} | {gf:.2f} | {mb:.0f} | {floor:.1f} |"
              .replace("| nan |", "| - |"))  # fmt: skip
        out.append(
            {"step": name, "wall_ms": w, "cpu_ms": c, "gflop": gf, "mb": mb, "floor_ms": floor}
        )
    print(f"| total per batch (without the one-off fill) | {total_w:.1f} | {total_c:.1f} | | | |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"batch": n, "frames": args.frames, "path": args.path,
                                     "gemm_gflops": gflops, "copy_gbs": gbs, "cores": cores,
                                     "load": os.getloadavg(), "steps": out},
                                    indent=2, default=float) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
