"""Engine-only throughput of every CPU backend, precision and requests-in-flight setting.

    .venv/bin/python -m bench.engine [--size 320] [--batches 1 8 32] [--reps 7]
        [--configs ort-fp32-1 ort-fp32-N ov-fp32-1 ov-fp32-N ov-bf16-N torch-fp32-1]
        [--cores 2] [--context-frames 64] [--json bench/results/engine.json]

Builds a production-default model (1 reference of mvtec-sample/bottle, shifted views in
the bank; random frames of a synthetic reference when the shared data is absent), then
times `backend.infer(batch)` on real test frames. Repetitions are interleaved: each
repetition runs every configuration once per batch size, in a rotated order, so a
change in the machine's load hits all of them alike; every row's speedup is the median
over repetitions of its img/s divided by the baseline's (`ort-fp32-1-before`:
onnxruntime fp32, one session with all cores, the graph before issue 17) in the same
repetition. Each row also
carries its largest |score| and |map| difference to torch fp32 on the same frames
(parity bound 1e-4 on scores). The load average before and after is recorded beside
the figures. Writes JSON; never asserted on in tests.

Configuration names: <runtime>-<precision>-<requests>, N = one request per core (at
most 4, engine.runtime.parallel), threads per request = cores / requests.
`-stream` variants keep two batches in flight (protocol.pipelined), as a worker that
pipelines inference across batches would; `-nopin` OpenVINO variants leave the stream
threads unpinned (ENABLE_CPU_PINNING=NO). `ort-fp32-1-before` exports the map chain as
the separate full-size steps it was before issue 17 (bilinear, 33-tap Gaussian convs,
bilinear; engine.scoring.runtime_model.resize_map_stepwise), the path the issue's
speedup is counted from. `ov-int8-*` run the INT8 IR of engine.runtime.int8 (trunk
quantized on the reference, bank and scale rebuilt with it: its score differs from
torch FP32 by design; bench.precision measures its accuracy). `+ctx<K>` variants score
with a line context of K frames as the worker does by default (CLAD_LINE_CONTEXT): the
context-stage graph under that runtime, then the context search in torch
(engine.scoring.line_context) over ContextConfig().search_frames frames per query;
`+ctx<K>-all` searches every context frame. Their parity is against torch scoring with
the same context and search, their speedup against ort-fp32-1-before+ctx<K>-all (the
worker's default path before issue 17). A `-bank<P>` variant (e.g. `ort-fp32-1-bank25`)
builds its model with ScoringConfig.bank_share = P/100 (the greedy core-set of the
reference bank); its parity is against torch with that same bank. The `-before`
baselines always keep the whole bank, as the path did then; the other rows use the
ScoringConfig default. `--shots K` builds the model from K references.
`+ctx<K>-lead` rows score with the lead of issue 33 (frames whose reference-only score
is under the threshold are not searched in the context) at a threshold that spares
`--lead-spare` of the timed batch-8 frames (the share the lead spares depends on the
line and its operating threshold: bench.context_lead measures it, e.g. transistor 81%
at 1% false alarms); the other `+ctx` rows have no threshold and search every frame
(the exact path). `+ctx<K>-bf16` rows search in bfloat16 (ContextConfig.search_precision;
measured, not the default). The bench's context holds the timed frames themselves, so their
fused scores are ~0: the threshold is set on reference-only scores for that reason. `--defect-share
S` times a line-like stream instead of the test images as they are: 32 frames, a share S
of them defective, normals and defects each cycled through the test images, in a
seeded order (with a batch of B the first B of them are timed, as always).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.runtime import make_backend, pipelined
from engine.runtime.parallel import cpu_cores, default_requests
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.line_context import ContextConfig
from engine.scoring.runtime_model import CladRuntime, resize_map_stepwise

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# the path before issue 17: onnxruntime FP32, one session with all cores, stepwise maps
BASELINE = "ort-fp32-1-before"
DEFAULT_CONFIGS = ["ort-fp32-1-before", "ort-fp32-1", "ort-fp32-N", "ov-fp32-1", "ov-fp32-N",
                   "ov-fp32-N-stream", "ov-int8-1", "ov-int8-N", "ov-bf16-N", "torch-fp32-1",
                   "ort-fp32-1+ctx", "ort-fp32-N+ctx", "ov-fp32-N+ctx",
                   "ort-fp32-N+ctx-all"]  # fmt: skip
# frames per timed call group: enough work per point that one call's jitter is small
FRAMES_PER_POINT = 32

Infer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def baseline_of(name: str) -> str:
    """The row a configuration's speedup is against: the path before issue 17, with
    the same line context when the configuration has one."""
    _, plus, context = name.partition("+")
    if context and not context.endswith("-all"):
        context = context.removesuffix("-lead").removesuffix("-bf16") + "-all"
    return BASELINE + plus + context


def load_frames(
    data: Path, category: str, size: int, shots: int = 1
) -> tuple[list[np.ndarray], np.ndarray]:
    """(references, test frames) at `size`: mvtec-sample, or synthetic if absent."""
    refs, frames, _labels = load_labelled(data, category, size, shots)
    return refs, frames


def load_labelled(
    data: Path, category: str, size: int, shots: int = 1
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(references, test frames, labels 1 = defective) at `size`; synthetic if absent
    (every synthetic frame labelled normal)."""
    folder = data / "mvtec-sample" / category
    if folder.is_dir():
        from engine.training.datasets import load_rgb, split_category

        split = split_category(folder, shots=shots)
        refs = [load_rgb(p, size) for p in split.references]
        frames = np.stack([load_rgb(s.path, size) for s in split.evaluated])
        return refs, frames, np.array([s.label for s in split.evaluated])
    rng = np.random.default_rng(0)
    refs = [rng.integers(0, 256, (size, size, 3), np.uint8) for _ in range(shots)]
    return refs, rng.integers(0, 256, (32, size, size, 3), np.uint8), np.zeros(32, int)


def line_frames(
    frames: np.ndarray, labels: np.ndarray, share: float, count: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A line-like stream: `count` frames, round(share x count) of them defective (at
    least one when share > 0 and the set has one), normals and defects cycled, seeded."""
    normal, defect = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    k = min(count, round(share * count)) if len(defect) else 0
    k = max(k, 1) if share > 0 and len(defect) else k
    idx = np.concatenate([defect[np.arange(k) % max(1, len(defect))],
                          normal[np.arange(count - k) % len(normal)]]).astype(int)  # fmt: skip
    idx = idx[np.random.default_rng(seed).permutation(count)]
    return np.ascontiguousarray(frames[idx]), labels[idx]


def bank_share_of(name: str, default: float) -> float:
    """The bank share a configuration's model is built with: 1 for the `-before`
    baselines (the whole bank, as then), P/100 for `-bank<P>`, else `default`."""
    modes = name.partition("+")[0].split("-")[3:]
    if "before" in modes:
        return 1.0
    shares = [int(m[4:]) / 100 for m in modes if m.startswith("bank") and m[4:].isdigit()]
    return shares[0] if shares else default


def supports_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def context_of(runtime: torch.nn.Module, frames: np.ndarray, size: int) -> list:
    """A full line context of `size` frames (engine.scoring.line_context), from the test frames."""
    from engine.scoring.line_context import embed

    x = torch.from_numpy(tile(frames, size))
    with torch.no_grad():
        return [e for i in range(0, size, 8) for e in embed(runtime, x[i : i + 8])[1]]


def context_scorer(
    runtime: torch.nn.Module, context: list, stage: object | None, search_all: bool = False,
    threshold: float = float("inf"), precision: str = "fp32",
) -> Infer:  # fmt: skip
    """Scoring with the line context as the worker does (the stage: the CPU graph; the
    context's search matrix kept between calls, as the worker keeps it per product);
    `search_all`: every context frame searched, as before `search_frames`; a finite
    `threshold`: the lead spares frames under it."""
    from engine.scoring.line_context import ContextConfig, ContextIndex, score_with_context

    cfg = ContextConfig(max_frames=len(context))
    cfg = cfg.model_copy(update={"search_frames": 0}) if search_all else cfg
    index = ContextIndex(precision)  # type: ignore[arg-type]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, _, _ = score_with_context(runtime, torch.from_numpy(x), context, cfg, stage,  # type: ignore[arg-type]
                                       index=index, threshold=threshold)  # fmt: skip
        return out.scores.numpy(), out.maps.numpy()

    return run


def lead_threshold(
    runtime: torch.nn.Module, frames: np.ndarray, spare: float
) -> tuple[float, float]:
    """(threshold, share of the first 8 frames under it): the `spare` quantile of the
    reference-only scores of the batch timed at batch 8."""
    with torch.no_grad():
        scores = runtime(torch.from_numpy(frames[:8])).scores.numpy()
    threshold = float(np.quantile(scores, spare, method="nearest"))
    return threshold, float((scores <= threshold).mean())


class StepwiseRuntime(CladRuntime):
    """The runtime with the map chain as separate full-size steps (before issue 17)."""

    def resize_map(self, grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return resize_map_stepwise(grid, int(self.input_size), self.gauss, height, width)


def stepwise(runtime: CladRuntime) -> StepwiseRuntime:
    before = StepwiseRuntime.__new__(StepwiseRuntime)
    before.__dict__ = runtime.__dict__.copy()  # same modules and buffers, shared
    return before


def build_config(
    name: str, runtime: torch.nn.Module, cores: int, max_batch: int, context: list | None,
    int8_ir: Path | None = None, threshold: float = float("inf"),
) -> Infer:  # fmt: skip
    base, _, with_context = name.partition("+")
    runtime_name, precision, requests, *mode = base.split("-")
    if "before" in mode:
        runtime = stepwise(runtime)  # type: ignore[arg-type]
    n = default_requests(cores) if requests == "N" else int(requests)
    threads = max(1, cores // n)
    if with_context:
        from engine.runtime.context_stage import OnnxContextStage

        search_all = with_context.endswith("-all")
        lead = threshold if with_context.endswith("-lead") else float("inf")
        precision = "bf16" if "-bf16" in with_context else "fp32"
        if runtime_name == "torch":
            torch.set_num_threads(cores)
            return context_scorer(runtime, context or [], None, search_all, lead, precision)
        kind = {"ort": "onnxruntime", "ov": "openvino"}[runtime_name]
        stage = OnnxContextStage(runtime, None, threads, requests=n, kind=kind)  # type: ignore[arg-type]
        return context_scorer(runtime, context or [], stage, search_all, lead, precision)
    if runtime_name == "torch":
        torch.set_num_threads(cores)
        return make_backend("torch", runtime, max_batch=max_batch).infer
    if runtime_name == "ort":
        backend = make_backend("onnxruntime", runtime, max_batch=max_batch, requests=n,
                               intra_op_threads=threads)  # fmt: skip
    elif runtime_name == "ov":
        from engine.runtime.openvino_backend import openvino_backend

        backend = openvino_backend(runtime, None, requests=n, threads=threads,
                                   max_batch=max_batch, precision=precision,
                                   cpu_pinning="nopin" not in mode,
                                   int8_ir=int8_ir)  # type: ignore[arg-type]  # fmt: skip
    else:
        raise ValueError(f"unknown configuration {name}")
    if "stream" in mode:
        return lambda x: _stream(backend, x)
    return backend.infer


def _stream(backend: object, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`x` is a stack of equal batches [calls, B, H, W, 3]: all of them, two in flight."""
    parts = list(pipelined(backend, iter(x)))  # type: ignore[arg-type]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def tile(frames: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(frames, (n, *frames.shape[1:])))


def time_point(fn: Infer, frames: np.ndarray, batch: int, stream: bool) -> float:
    """img/s of one repetition: ceil(FRAMES_PER_POINT / batch) calls (at least one)."""
    calls = max(1, -(-FRAMES_PER_POINT // batch))
    x = tile(frames, batch)
    if stream:  # all calls' batches handed over at once, two in flight
        xs = np.stack([x] * calls)
        t = time.perf_counter()
        fn(xs)
        return calls * batch / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return calls * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--shots", type=int, default=1, help="references the model is built from")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--configs", nargs="+", default=None)
    ap.add_argument("--cores", type=int, default=None, help="default: this process's CPUs")
    ap.add_argument(
        "--context-frames",
        type=int,
        default=ContextConfig().max_frames,
        help="size of the line context of the +ctx configurations (0: none)",
    )
    ap.add_argument("--defect-share", type=float, default=None,
                    help="time a line-like stream with this share of defective frames "
                         "(default: the test images as they are)")
    ap.add_argument("--lead-spare", type=float, default=0.8,
                    help="share of the timed frames the `-lead` rows' threshold spares")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    args = ap.parse_args()
    cores = args.cores or cpu_cores()
    names = args.configs or DEFAULT_CONFIGS
    from engine.runtime.openvino_backend import openvino_installed

    if not openvino_installed():
        names = [n for n in names if not n.startswith("ov-")]
    elif not supports_bf16():
        names = [n for n in names if not n.startswith("ov-bf16")]
    if BASELINE not in names:
        names.insert(0, BASELINE)

    torch.set_num_threads(cores)
    refs, frames, labels = load_labelled(args.data, args.category, args.size, args.shots)
    if args.defect_share is not None:
        frames, labels = line_frames(frames, labels, args.defect_share)
    config = ScoringConfig(input_size=args.size)
    runtime = build_runtime(refs, config)
    max_batch = max(args.batches)
    load_before = os.getloadavg()
    print(
        f"{len(frames)} frames at {args.size} px, {cores} cores, load average "
        f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}",
        flush=True,
    )

    context = context_of(runtime, frames, args.context_frames) if args.context_frames else None
    threshold, spared = float("inf"), 0.0
    if context is not None and any(n.endswith("-lead") for n in names):
        threshold, spared = lead_threshold(runtime, frames, args.lead_spare)
        print(f"lead threshold {threshold:.3f}: {spared:.0%} of the timed batch-8 frames under "
              "it on their reference-only score", flush=True)
    names = [n.replace("+ctx", f"+ctx{args.context_frames}") for n in names]
    if not args.context_frames:
        names = [n for n in names if "+ctx" not in n]
    # each baseline once, even when several rows share it
    names = list(dict.fromkeys(names + [baseline_of(n) for n in names]))
    # one model per bank share in use (the default one already built)
    share_of = {n: bank_share_of(n, config.bank_share) for n in names}
    models = {config.bank_share: (runtime, config)}
    for share in set(share_of.values()) - set(models):
        cfg = config.model_copy(update={"bank_share": share})
        models[share] = (build_runtime(refs, cfg), cfg)
    int8_irs: dict[float, Path] = {}
    for share in {share_of[n] for n in names if "-int8-" in n}:
        from engine.runtime.int8 import build_int8

        work = tempfile.mkdtemp(prefix="clad-bench-int8-")
        int8_irs[share] = build_int8(models[share][0], refs, models[share][1], work).path
    fns = {name: build_config(name, models[share_of[name]][0], cores, max_batch, context,
                              int8_irs.get(share_of[name]), threshold)
           for name in names}  # fmt: skip
    check = frames[:8]
    expected: dict[tuple[float, str], tuple[np.ndarray, np.ndarray]] = {}
    for share, (model, _) in models.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(check))
        expected[(share, "")] = (ref.scores.numpy(), ref.maps.numpy())
        if context is not None:  # context rows against torch scoring with the same context
            expected[(share, "ctx")] = context_scorer(model, context, None)(check)
            expected[(share, "ctx-all")] = context_scorer(model, context, None, True)(check)
    parity, differ = {}, {}
    for name, fn in fns.items():  # also the warm-up of every configuration and batch size
        stream = name.endswith("-stream")
        s, m = fn(np.stack([check])) if stream else fn(check)
        kind = "" if "+ctx" not in name else "ctx-all" if name.endswith("-all") else "ctx"
        ref_scores, ref_maps = expected[(share_of[name], kind)]
        if name.endswith("-lead"):  # spared frames store their reference-only score: the
            # parity is on the verdicts, and on the scores of the frames over the threshold
            differ[name] = int(((s > threshold) != (ref_scores > threshold)).sum())
            ref_scores = np.where(ref_scores > threshold, ref_scores, s)
            ref_maps = m
        parity[name] = (float(np.abs(s - ref_scores).max()), float(np.abs(m - ref_maps).max()))
        for b in args.batches:
            fn(tile(frames, b)[None]) if stream else fn(tile(frames, b))

    speeds: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in args.batches}
    for rep in range(args.reps):
        for b in args.batches:
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                speeds[(name, b)].append(time_point(fns[name], frames, b, name.endswith("-stream")))
        print(f"repetition {rep + 1}/{args.reps} done, load {os.getloadavg()[0]:.2f}", flush=True)
    load_after = os.getloadavg()

    rows = []
    for b in args.batches:
        for name in names:
            v = speeds[(name, b)]
            base = speeds[(baseline_of(name), b)]
            ratios = [x / y for x, y in zip(v, base, strict=True)]
            row = {
                "config": name, "batch": b, "img_per_s_median": round(statistics.median(v), 2),
                "img_per_s_min": round(min(v), 2), "img_per_s_max": round(max(v), 2),
                "baseline": baseline_of(name),
                "speedup_median": round(statistics.median(ratios), 3),
                "speedup_min": round(min(ratios), 3), "speedup_max": round(max(ratios), 3),
                "max_abs_score_diff_vs_torch": parity[name][0],
                "max_abs_map_diff_vs_torch": parity[name][1], "reps": len(v),
                "lead_verdicts_differing": differ.get(name),
            }  # fmt: skip
            rows.append(row)
            print(f"{name:>18} batch {b:>3}: {row['img_per_s_median']:7.1f} img/s "
                  f"({row['img_per_s_min']:.1f}-{row['img_per_s_max']:.1f})  "
                  f"x{row['speedup_median']:.2f} ({row['speedup_min']:.2f}-"
                  f"{row['speedup_max']:.2f})  |Δscore| {parity[name][0]:.1e}",
                  flush=True)  # fmt: skip
    env = {
        "cpu": platform.processor() or platform.machine(), "cores": cores,
        "requests_N": default_requests(cores), "size": args.size, "category": args.category,
        "frames": len(frames), "shots": args.shots, "torch": torch.__version__,
        "bank_rows": {str(k): int(m.bank.shape[0]) for k, (m, _) in models.items()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after], "baseline": BASELINE,
        "defect_share": args.defect_share, "defective_frames": int(labels.sum()),
        "lead_threshold": threshold if threshold != float("inf") else None,
        "lead_spare": args.lead_spare,
        "lead_spared_share_at_batch_8": spared if threshold != float("inf") else None,
    }  # fmt: skip
    for package in ("onnxruntime", "openvino"):
        try:
            env[package] = __import__(package).__version__
        except ImportError:
            env[package] = None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
