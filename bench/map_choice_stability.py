"""How steady the pixel-map choice from labelled defects is (engine.evaluation.map_choice).

    .venv/bin/python -m bench.map_choice_stability --data /work/shared/data [--shots 1,4]
        [--labelled 2,4,8] [--draws 20] [--category transistor]

Per category and K (references as `clad eval` takes them): the engine's default runtime,
both of its maps (fine, pooled) against the references alone on every defect image of the
test split, and their pixel AUROC over all of them (which map is right for the product);
then `--draws` seeded draws of N labelled defect images, each decided by
choose_pixel_map as retraining decides, and the share of draws that chose the pooled map.
A good rule picks the pooled map often where it is right by a clear margin and
never where the fine map is. Prints a table; writes bench/results/map-choice-stability.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.progress import track

from bench.accuracy import suite_categories
from engine.evaluation.map_choice import SIDE, choose_pixel_map, decide, reference_maps
from engine.evaluation.metrics import auroc
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.training.datasets import load_mask, load_rgb, split_category

RESULTS = Path(__file__).parent / "results"


def category_rows(cat: Path, k: int, counts: list[int], draws: int) -> dict:
    split = split_category(cat, k)
    defects = [s for s in split.evaluated if s.label == 1]
    size = ScoringConfig().input_size
    images = [load_rgb(s.path, size) for s in defects]
    masks = [load_mask(s, size) for s in defects]
    runtime = build_runtime([load_rgb(p, size) for p in split.references], ScoringConfig())
    fine, pooled = reference_maps(runtime, images, SIDE)
    truth = np.stack([cv2.resize(m, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
                      for m in masks]) > 0  # fmt: skip
    row = {"root": cat.parent.name, "category": cat.name, "shots": k, "defects": len(defects),
           "fine_auroc": 100 * auroc(truth, fine), "pooled_auroc": 100 * auroc(truth, pooled)}
    row["right_map"] = decide(row["fine_auroc"], row["pooled_auroc"], len(defects)).map
    rng = np.random.default_rng(0)
    for n in counts:
        picks = []
        for _ in range(draws):
            sel = rng.choice(len(defects), min(n, len(defects)), replace=False)
            choice = choose_pixel_map(runtime, [images[i] for i in sel], [masks[i] for i in sel])
            picks.append(choice.map == "pooled")
        row[f"pooled_share_n{n}"] = float(np.mean(picks))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--shots", default="1,4")
    ap.add_argument("--labelled", default="2,4,8", help="labelled defect images per draw")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--category", action="append", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "map-choice-stability.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.labelled.split(",")]
    cats = suite_categories(args.data, args.category)
    jobs = [(c, int(k)) for c in cats for k in args.shots.split(",")]
    rows = [category_rows(c, k, counts, args.draws)
            for c, k in track(jobs, description="categories")]  # fmt: skip
    head = " | ".join(f"pooled chosen, N={n}" for n in counts)
    print(f"| category | K | defects | pixel AUROC fine / pooled (all defects) | right map | "
          f"{head} |")
    print("|---|---|---|---|---|" + "---|" * len(counts))
    for r in rows:
        shares = " | ".join(f"{100 * r[f'pooled_share_n{n}']:.0f}%" for n in counts)
        print(f"| {r['root']}/{r['category']} | {r['shots']} | {r['defects']} | "
              f"{r['fine_auroc']:.1f} / {r['pooled_auroc']:.1f} | {r['right_map']} | {shares} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python -m bench.map_choice_stability "
                                    f"--shots {args.shots} --labelled {args.labelled} "
                                    f"--draws {args.draws}", "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
