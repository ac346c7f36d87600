"""How many frames the line context's lead spares, and that no verdict moves (issue 33).

    .venv/bin/python -m bench.context_lead [--defect-share 0.05] [--shots 1] [--batch 8]
        [--categories bottle capsule grid transistor leather magnetic_tile]

Per category: a k-shot model (the first references, ScoringConfig defaults, 320 px) and
its threshold calibrated from the references alone (engine.scoring.kshot_calibration, what a
k-shot worker serves with). Two streams, each in a seeded shuffled order, scored in
batches as the worker scores them (engine.scoring.line_context.score_and_offer, a
LineContext with that threshold, the default ContextConfig):
  - `line`: every normal image the category has beside the references (test/good and
    train/good), with defects drawn to make `--defect-share` of the stream;
  - `suite`: the evaluated test images as they are (the suite's share of defects).
Each stream is scored twice, lead on and lead off (the same admissions: both offer
reference-only scores). Reported: frames scored with a context, the share the lead
spared, verdicts that differ (must be 0), the largest score change on searched frames
(must be ~0), and the mean score the spared frames store against their fused score.
Also the share that would be spared at the stream's max-F1 threshold of the fused
scores (an operating point tuned on labels). Writes JSON; never asserted on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from engine.scoring.builder import ScoringConfig
from engine.scoring.line_context import ContextConfig, Embeddings, LineContext, score_searched
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import _images, load_rgb, split_category

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FOLDERS = {"bottle": "mvtec-sample", "capsule": "mvtec-sample", "grid": "mvtec-sample",
           "transistor": "mvtec-more", "leather": "mvtec-more",
           "magnetic_tile": "magnetic-tile"}  # fmt: skip


def streams(folder: Path, shots: int, share: float, seed: int = 0) -> dict[str, list]:
    """{'line': [(path, label)], 'suite': [(path, label)]} in a seeded shuffled order."""
    split = split_category(folder, shots)
    rng = np.random.default_rng(seed)
    refs = set(split.references)
    normals = [s.path for s in split.evaluated if s.label == 0]
    normals += [p for p in _images(folder / "train" / "good") if p not in refs]
    defects = [s.path for s in split.evaluated if s.label == 1]
    k = min(len(defects), max(1, round(share / (1 - share) * len(normals))))
    line = [(p, 0) for p in normals] + [(defects[i], 1) for i in rng.permutation(len(defects))[:k]]
    suite = [(s.path, s.label) for s in split.evaluated]
    return {name: [items[i] for i in rng.permutation(len(items))]
            for name, items in (("line", line), ("suite", suite))}  # fmt: skip


def run_stream(runtime: torch.nn.Module, items: list, batch: int, size: int) -> dict:
    """Reference-only and fused scores of the stream, every frame searched, admission as
    the suite's line protocol (no threshold in the cut: robust cut and rank only)."""
    frames = np.stack([load_rgb(p, size) for p, _ in items])
    line: LineContext[Embeddings] = LineContext(ContextConfig(lead=False))
    reference, fused, with_context = [], [], []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i : i + batch])
        items_now = line.items(float(i))
        out, embs, ref, _searched = score_searched(runtime, x, items_now, line.cfg,  # type: ignore[arg-type]
                                                   index=line.search_index())  # fmt: skip
        for score, emb in zip(ref.tolist(), embs, strict=True):
            line.offer(emb, score, float(i))
        reference += ref.tolist()
        fused += out.scores.tolist()
        with_context += [len(items_now) >= line.cfg.min_frames] * len(x)
    return {
        "reference": np.array(reference),
        "fused": np.array(fused),
        "with_context": np.array(with_context),
        "labels": np.array([lb for _, lb in items]),
    }


def at_threshold(s: dict, threshold: float) -> dict:
    """The lead at `threshold`: frames spared, verdicts with and without it."""
    ctx = s["with_context"]
    spared = ctx & (s["reference"] <= threshold)
    # the lead's stored score: reference-only where spared, fused elsewhere
    stored = np.where(spared, s["reference"], s["fused"])
    return {
        "threshold": threshold, "scored_with_context": int(ctx.sum()),
        "spared": int(spared.sum()), "spared_share": float(spared.sum() / max(1, ctx.sum())),
        "verdicts_differing": int(((stored > threshold) != (s["fused"] > threshold)).sum()),
        "stored_mean_spared_lead_vs_fused": [float(s["reference"][spared].mean()),
                                             float(s["fused"][spared].mean())]
        if spared.any() else None,
    }  # fmt: skip


def max_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if labels.sum() == 0 or labels.sum() == len(labels):
        return None
    best, cut = -1.0, 0.0
    for t in np.unique(scores):
        pred = scores > t
        f1 = 2 * float((pred & (labels == 1)).sum()) / max(1.0, pred.sum() + labels.sum())
        if f1 > best:
            best, cut = f1, float(t)
    return cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", nargs="+", default=list(FOLDERS))
    ap.add_argument("--defect-share", type=float, default=0.05)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "context_lead.json")
    args = ap.parse_args()
    from engine.scoring.kshot_calibration import calibrated_runtime

    config = ScoringConfig(input_size=args.size)
    encoder = VisualEncoder(config.backbone, config.stages)
    started, rows = time.monotonic(), []
    for category in args.categories:
        folder = DATA / FOLDERS[category] / category
        split = split_category(folder, args.shots)
        refs = [load_rgb(p, args.size) for p in split.references]
        runtime, threshold = calibrated_runtime(refs, config, encoder)
        for name, items in streams(folder, args.shots, args.defect_share).items():
            s = run_stream(runtime, items, args.batch, args.size)
            # the fused scores must never exceed the reference-only ones (the lead's premise)
            above = float((s["fused"] - s["reference"]).max())
            normal = s["fused"][s["labels"] == 0]
            cuts = {
                "calibrated": threshold.value,
                "max_f1": max_f1_threshold(s["fused"], s["labels"]),
                "normal_p99": float(np.quantile(normal, 0.99)) if len(normal) else None,
            }
            row = {
                "category": category,
                "stream": name,
                "frames": len(items),
                "defects": int(s["labels"].sum()),
                "max_fused_minus_reference": above,
                "at": {k: at_threshold(s, v) for k, v in cuts.items() if v is not None},
            }
            rows.append(row)
            shares = ", ".join(
                f"{k} {v['threshold']:.3f}: {v['spared']}/"
                f"{v['scored_with_context']} spared ({v['spared_share']:.0%}), "
                f"{v['verdicts_differing']} verdicts differ"
                for k, v in row["at"].items()
            )
            print(f"[{time.monotonic() - started:6.0f} s] {category:>13} {name:>5}: "
                  f"{row['frames']} frames ({row['defects']} defects), fused - reference "
                  f"<= {above:.1e}; {shares}", flush=True)  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"load": os.getloadavg(), "shots": args.shots,
                                     "defect_share": args.defect_share, "rows": rows},
                                    indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
