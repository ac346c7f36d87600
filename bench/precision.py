"""INT8 against FP32 on the accuracy suite's categories: the adoption check of issue 17.

    nice -n 10 .venv/bin/python -m bench.precision --data /work/shared/data [--shots 1,4]
        [--category bottle] [--max-images 160]

Per category of every MVTec-layout root and shot count K, on the suite's evaluated
images (bench.accuracy: references = first K of train/good, at most --max-images test
images in a seeded draw that keeps the defect share): the pure K-shot engine
(`ScoringConfig()`, no line context) in FP32 (torch), and the same model with its trunk
quantized to INT8 by engine.runtime.int8 (bank and scale rebuilt by the quantized
encoder, calibration on the K references) run by OpenVINO. Image and pixel AUROC with
the suite's metrics (256 x 256 maps, 95% bootstrap intervals); INT8 is adopted when the
mean of each is within 0.5 points of FP32 at every K. Writes
bench/results/precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from bench.accuracy import markdown, mean_rows, measure, roots_under, subset
from engine.evaluation.evaluate import METRIC_SIZE, metric_map
from engine.evaluation.precision import TOLERANCE
from engine.runtime.int8 import IrScorer, build_int8
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.training.datasets import find_categories, load_mask, load_rgb, split_category

RESULTS = Path(__file__).parent / "results"
# the FP32 row with the whole reference bank, scored when the model's bank_share cuts it
FULL_BANK = "engine-fullbank"


@torch.no_grad()
def score(scorer: object, imgs: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(scores, METRIC_SIZE maps) of a runtime or an IrScorer over uint8 NHWC images."""
    outs = [scorer(torch.from_numpy(imgs[i : i + batch]))  # type: ignore[operator]
            for i in range(0, len(imgs), batch)]  # fmt: skip
    maps = torch.cat([o.maps for o in outs]).numpy()
    return torch.cat([o.scores for o in outs]).numpy(), np.stack([metric_map(m) for m in maps])


def run_category(
    cat: Path, shots: list[int], max_images: int, work: Path, cfg: ScoringConfig
) -> list[dict]:
    root = cat.parent.name
    everything = subset(split_category(cat, 0).evaluated, max_images)
    rows = []
    for k in shots:
        split = split_category(cat, k)
        keep = {s.path for s in everything}
        evaluated = [s for s in split.evaluated if s.path in keep]
        imgs = np.stack([load_rgb(s.path, cfg.input_size) for s in evaluated])
        masks = np.stack([load_mask(s, METRIC_SIZE) for s in evaluated])
        labels = np.array([s.label for s in evaluated])
        refs = [load_rgb(p, cfg.input_size) for p in split.references]
        rt = build_runtime(refs, cfg)
        int8 = build_int8(rt, refs, cfg, work / f"{root}-{cat.name}-{k}")
        scorers = [("engine", rt), ("engine-int8", IrScorer(int8.path))]
        if cfg.bank_share < 1.0:  # the FP32 path with the whole bank, as before the cut
            full = cfg.model_copy(update={"bank_share": 1.0})
            scorers.insert(0, (FULL_BANK, build_runtime(refs, full)))
        for method, scorer in scorers:
            scores, maps = score(scorer, imgs)
            rows.append({"root": root, "category": cat.name, "shots": k, "method": method,
                         "n_evaluated": len(evaluated), "n_anomalous": int(labels.sum()),
                         **measure(labels, masks, scores, maps)})  # fmt: skip
        rows[-1]["image_scale_fp32"] = int8.report.image_scale_fp32
        rows[-1]["image_scale_int8"] = int8.report.image_scale_int8
    return rows


def verdict(means: list[dict]) -> list[str]:
    """INT8 against FP32 with the same bank, and against FP32 with the whole bank when
    that row was scored, per K."""
    lines = []
    for k in sorted({m["shots"] for m in means}):
        by = {m["method"]: m for m in means if m["shots"] == k}
        for base, label in (("engine", "FP32"), (FULL_BANK, "FP32 whole bank")):
            if base not in by or "engine-int8" not in by:
                continue
            d_img = by["engine-int8"]["image_auroc"] - by[base]["image_auroc"]
            d_pix = by["engine-int8"]["pixel_auroc"] - by[base]["pixel_auroc"]
            ok = abs(d_img) <= TOLERANCE and abs(d_pix) <= TOLERANCE
            lines.append(f"- K={k}: INT8 - {label} mean image {d_img:+.2f}, pixel "
                         f"{d_pix:+.2f} -> {'within' if ok else 'NOT within'} "
                         f"{TOLERANCE} points")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--shots", default="1,4")
    ap.add_argument("--category", action="append", default=None)
    ap.add_argument("--max-images", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "precision.json")
    ap.add_argument("--bank-share", type=float, default=ScoringConfig().bank_share,
                    help="ScoringConfig.bank_share of the model (below 1 a whole-bank FP32 "
                    "row is scored too)")  # fmt: skip
    args = ap.parse_args()
    cfg = ScoringConfig(bank_share=args.bank_share)
    torch.set_num_threads(args.threads)
    shots = [int(k) for k in args.shots.split(",")]
    cats = [c for r in roots_under(args.data) for c in find_categories(r)
            if not args.category or c.name in args.category]  # fmt: skip
    if not cats:
        raise SystemExit(f"no categories under {args.data}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        task = progress.add_task("categories", total=len(cats))
        for cat in cats:
            progress.update(task, description=f"{cat.parent.name}/{cat.name}")
            rows += run_category(cat, shots, args.max_images, Path(tmp), cfg)
            progress.advance(task)
    means = mean_rows(rows)
    command = "python -m bench.precision " + " ".join(sys.argv[1:])
    text = markdown(rows, means, command) + "\nINT8 adoption (issue 17):\n\n" + "\n".join(
        verdict(means)) + "\n"  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "means": means}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
