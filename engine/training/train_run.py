"""`clad train` end to end for one product: data -> heads -> runtime -> threshold -> model dir.

Normal images come from CATEGORY/train/good (else test/good). A held-out share of them
calibrates the threshold (false-alarm rate) unless the caller passes labelled validation
scores; the first `shots` training normals become the memory-bank references.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import calibrate
from engine.scoring.prompts import PromptSet, build_prompts
from engine.scoring.text_encoder import TextEncoderConfig, load_text_encoder
from engine.scoring.visual_encoder import VisualEncoder
from engine.training.datasets import load_rgb
from engine.training.train import (
    FeatureSet,
    TrainConfig,
    config_hash,
    extract_features,
    train_heads,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def normal_paths(cat_dir: Path) -> list[Path]:
    """Normal images of a product, train/good first choice (sorted by name)."""
    for sub in ("train/good", "test/good"):
        d = cat_dir / sub
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return files
    raise FileNotFoundError(f"no normal images under {cat_dir}/train/good or test/good")


def prompt_embeddings(
    prompts: list[PromptSet], text_cfg: TextEncoderConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Text-encoder embeddings of each product's normal and defect prompts."""
    enc = load_text_encoder(text_cfg)
    return [(enc.encode(p.normal), enc.encode(p.defect)) for p in prompts]


def cached_features(
    encoder: VisualEncoder,
    groups: list[list[Path]],
    size: int,
    cfg: TrainConfig,
    cache_dir: Path | None,
    progress: bool = True,
) -> FeatureSet:
    """Frozen-encoder features of the training views, cached on disk by content key."""
    key = config_hash({"groups": [[str(p) for p in g] for g in groups], "size": size,
                       "cfg": asdict(cfg), "channels": encoder.channels})  # fmt: skip
    path = cache_dir / f"features-{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return FeatureSet(*torch.load(path, weights_only=False))
    images = [[load_rgb(p, size) for p in g] for g in groups]
    data = extract_features(encoder, images, cfg, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tuple(data), path)
    return data


def train_product(
    data_dir: Path,
    category: str,
    out_dir: Path,
    cfg: TrainConfig | None = None,
    scoring: ScoringConfig | None = None,
    text_cfg: TextEncoderConfig | None = None,
    shots: int = 1,
    holdout: float = 0.2,
    max_images: int = 40,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train, calibrate and save one product's model; returns the version directory."""
    cfg = cfg or TrainConfig()
    scoring = scoring or ScoringConfig(w_text_pixel=0.5, w_text_image=0.5)
    text_cfg = text_cfg or TextEncoderConfig()
    cat_dir = Path(data_dir) / category if (Path(data_dir) / category).is_dir() else Path(data_dir)
    paths = normal_paths(cat_dir)[:max_images]
    n_hold = max(1, int(round(holdout * len(paths)))) if len(paths) > 2 else 0
    train_paths, hold_paths = paths[: len(paths) - n_hold], paths[len(paths) - n_hold :]
    prompts = build_prompts(category)
    texts = prompt_embeddings([prompts], text_cfg)
    encoder = VisualEncoder(scoring.backbone, scoring.stages)
    work = Path(out_dir) / ".work" / category
    data = cached_features(encoder, [train_paths], scoring.input_size, cfg, work, progress)
    branch, hist = train_heads(data, texts, cfg, work / "checkpoint.pt", resume, progress)
    refs = [load_rgb(p) for p in train_paths[:shots]]
    runtime = build_runtime(refs, scoring, text_branch=branch, encoder=encoder).eval()
    with torch.no_grad():
        held = [runtime(torch.from_numpy(load_rgb(p)[None])) for p in hold_paths]
    scores = torch.cat([o.scores for o in held]).numpy() if held else np.zeros(0)
    maps = [o.maps[0].numpy() for o in held]
    # no held-out normal: the runtime's unit (normal ~ 1) for both thresholds
    threshold = calibrate(scores, normal_maps=maps) if scores.size else calibrate(
        np.array([1.0]), normal_maps=[np.ones((1, 1))])
    metrics = {
        "train_config": asdict(cfg),
        "text_encoder": text_cfg.to_dict(),
        "history": hist.epochs,
        "n_train_normals": len(train_paths),
        "n_views": len(data.labels),
        "n_holdout_normals": len(hold_paths),
        "holdout_scores": scores.tolist(),
        "shots": shots,
        "references": [p.name for p in train_paths[:shots]],
    }
    meta = ModelMetadata(category, scoring, threshold, prompts, metrics)
    return save_model(runtime, out_dir, meta)
