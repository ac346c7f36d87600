"""Figures for engine/training/NOTES.md: CLAD text branch, trained vs untrained heads.

1. in-category: train on one product's normals + synthetic defects, eq.3+eq.7 loss before
   and after, and image AUROC (eq. 4 score, text only) of its test set, untrained vs trained;
2. 0-shot: heads trained on synthetic defects of the OTHER products only, evaluated on the
   held-out product with its own prompts (text only: no memory bank).
Usage: python -m bench.text_zero_shot --epochs 10 [--out bench/results/text_zero_shot.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.evaluation.metrics import auroc
from engine.scoring.heads import CladTextBranch
from engine.scoring.prompts import build_prompts
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import load_mask, load_rgb, split_category
from engine.training.train import TrainConfig, preprocess, train_heads
from engine.training.train_run import cached_features, normal_paths, prompt_embeddings

CATS = {
    "bottle": Path("/work/shared/data/mvtec-sample/bottle"),
    "capsule": Path("/work/shared/data/mvtec-sample/capsule"),
    "grid": Path("/work/shared/data/mvtec-sample/grid"),
    "magnetic_tile": Path("/work/shared/data/magnetic-tile/magnetic_tile"),
}
SIZE, PIX = 320, 80  # model input; pixel AUROC computed on an 80x80 grid (keeps it light)


@torch.no_grad()
def test_features(
    enc: VisualEncoder, cat: Path
) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    samples = split_category(cat, 0).evaluated
    feats = []
    for i in range(0, len(samples), 8):
        batch = np.stack([load_rgb(s.path, SIZE) for s in samples[i : i + 8]])
        feats.append(enc.forward_features(preprocess(batch)))
    levels = [torch.cat([f[k] for f in feats]) for k in range(len(feats[0]))]
    masks = np.stack([load_mask(s, PIX) for s in samples])
    return levels, np.array([s.label for s in samples]), masks


@torch.no_grad()
def score(branch: CladTextBranch, feats: list[torch.Tensor], labels: np.ndarray, masks: np.ndarray):
    img, patch = branch(feats)
    pmap = F.interpolate(patch.unsqueeze(1), size=(PIX, PIX), mode="bilinear").squeeze(1)
    return {"image_auroc": auroc(labels, img.numpy()), "pixel_auroc": auroc(masks, pmap.numpy())}


def with_prompts(branch: CladTextBranch, text: tuple[torch.Tensor, torch.Tensor]) -> CladTextBranch:
    branch.text_normal, branch.text_defect = text[0].clone(), text[1].clone()
    return branch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-images", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/clad-text-cache"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/text_zero_shot.json"))
    args = ap.parse_args()
    cfg = TrainConfig(epochs=args.epochs)
    torch.manual_seed(0)
    enc = VisualEncoder("efficientnet-lite0", (2, 4))
    texts = dict(
        zip(CATS, prompt_embeddings([build_prompts(c) for c in CATS], _text_cfg()), strict=True)
    )
    normals = {c: normal_paths(p)[: args.max_images] for c, p in CATS.items()}
    tests = {c: test_features(enc, p) for c, p in CATS.items()}
    results: dict[str, dict] = {}
    for target in CATS:
        others = [c for c in CATS if c != target]
        data = cached_features(enc, [normals[c] for c in others], SIZE, cfg, args.cache, False)
        branch, hist = train_heads(data, [texts[c] for c in others], cfg, progress=False)
        torch.manual_seed(cfg.seed)
        fresh = CladTextBranch(branch.in_channels, *texts[target], cfg.joint_dim, cfg.hidden,
                               cfg.sigma, cfg.tau)  # fmt: skip
        results[f"zero_shot/{target}"] = {
            "trained_on": others,
            "untrained": score(fresh.eval(), *tests[target]),
            "trained": score(with_prompts(branch, texts[target]), *tests[target]),
            "loss_first_last": [hist.epochs[0]["total"], hist.epochs[-1]["total"]],
        }
        print(target, json.dumps(results[f"zero_shot/{target}"]), flush=True)
    for target in ("grid", "magnetic_tile"):  # categories with a train/good split
        data = cached_features(enc, [normals[target]], SIZE, cfg, args.cache, False)
        branch, hist = train_heads(data, [texts[target]], cfg, progress=False)
        torch.manual_seed(cfg.seed)
        fresh = CladTextBranch(branch.in_channels, *texts[target], cfg.joint_dim, cfg.hidden,
                               cfg.sigma, cfg.tau)  # fmt: skip
        results[f"in_category/{target}"] = {
            "loss_untrained": hist.epochs[0], "loss_trained": hist.epochs[-1],
            "untrained": score(fresh.eval(), *tests[target]),
            "trained": score(branch, *tests[target]),
        }  # fmt: skip
        print(target, json.dumps(results[f"in_category/{target}"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def _text_cfg():
    from engine.scoring.text_encoder import TextEncoderConfig

    return TextEncoderConfig()


if __name__ == "__main__":
    main()
