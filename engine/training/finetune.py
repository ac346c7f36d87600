"""Fine-tune a product's model from confirmed frames: the retraining job's engine side.

The challenger keeps the champion's encoder, scoring config and prompts; its text
heads are retrained with the CLAD objective (eq. 6) on confirmed normals (with
synthetic defects) plus the operator-confirmed anomalies and their masks; its
memory bank is the product's original references plus the patches of the chosen
confirmed normals (engine.training.bank_refresh: replaced each retrain, bounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.scoring.artifacts import LoadedModel
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.text_encoder import TextEncoderConfig, load_text_encoder
from engine.training.bank_refresh import refreshed_bank
from engine.training.train import (
    FeatureSet,
    History,
    TrainConfig,
    extract_features,
    preprocess,
    train_heads,
)


@dataclass(frozen=True)
class LabelledImage:
    image: np.ndarray  # uint8 HWC RGB, any size
    mask: np.ndarray | None  # uint8 HW (non-zero = defect) for anomalies, None for normals


def _resize(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, (size, size), interpolation=interpolation)


@torch.no_grad()
def real_anomaly_features(encoder: torch.nn.Module, anomalies: list[LabelledImage], size: int,
                          cfg: TrainConfig, batch: int = 8) -> FeatureSet | None:
    """Encoder features of confirmed anomalies, with patch labels from their masks."""
    if not anomalies:
        return None
    images = np.stack([_resize(a.image, size) for a in anomalies])
    masks = np.stack([(_resize(a.mask, size, nearest=True) > 0).astype(np.float32)
                      if a.mask is not None else np.ones((size, size), np.float32)
                      for a in anomalies])
    chunks = [encoder.forward_features(preprocess(images[i:i + batch]))
              for i in range(0, len(images), batch)]
    feats = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    h, w = feats[0].shape[-2:]
    cover = F.adaptive_avg_pool2d(torch.from_numpy(masks).unsqueeze(1), (h, w)).squeeze(1)
    patch = torch.where(cover >= cfg.patch_anomalous, 1, torch.where(cover > 0, -1, 0))
    n = len(anomalies)
    return FeatureSet(feats, torch.ones(n, dtype=torch.long), patch.to(torch.int8),
                      torch.zeros(n, dtype=torch.long))


def concat_features(a: FeatureSet, b: FeatureSet | None) -> FeatureSet:
    if b is None:
        return a
    return FeatureSet([torch.cat([x, y]) for x, y in zip(a.feats, b.feats, strict=True)],
                      torch.cat([a.labels, b.labels.to(a.labels.dtype)]),
                      torch.cat([a.patch_labels, b.patch_labels]),
                      torch.cat([a.groups, b.groups.to(a.groups.dtype)]))


def finetune_challenger(champion: LoadedModel, normals: list[np.ndarray],
                        anomalies: list[LabelledImage], cfg: TrainConfig, *,
                        max_references: int = 16, work_dir: Path | None = None,
                        resume: bool = False,
                        text_cfg: TextEncoderConfig | None = None,
                        progress: bool = True,
                        references: list[np.ndarray] | None = None,
                        root_rows: tuple[int, int] | None = None,
                        scoring_config: ScoringConfig | None = None,
                        ) -> tuple[CladRuntime, History]:  # fmt: skip
    """A challenger runtime from the champion plus confirmed frames (normals required).

    `references`: the normals whose patches enter the bank (default: the first
    max_references normals); `root_rows`: how many leading rows of the champion's bank and
    pixel bank are the product's own references (default: all), kept as they are;
    `scoring_config`: the challenger's (default: the champion's stored one)."""
    if not normals:
        raise ValueError("fine-tuning needs at least one confirmed normal frame")
    if champion.prompts is None:
        raise ValueError(f"model {champion.version} has no prompts; it cannot be fine-tuned")
    scoring = champion.metadata["config"]["scoring"]
    size = int(scoring["input_size"])
    encoder = champion.runtime.encoder
    # The champion's prompts must be embedded by the encoder it was trained with.
    stored = champion.metadata.get("metrics", {}).get("text_encoder") or {}
    text_encoder = load_text_encoder(text_cfg or TextEncoderConfig(**stored))
    texts = [(text_encoder.encode(champion.prompts.normal),
              text_encoder.encode(champion.prompts.defect))]
    synthetic = extract_features(encoder, [[_resize(n, size) for n in normals]], cfg,
                                 progress=progress)
    data = concat_features(synthetic, real_anomaly_features(encoder, anomalies, size, cfg))
    checkpoint = work_dir / "checkpoint.pt" if work_dir else None
    branch, history = train_heads(data, texts, cfg, checkpoint, resume=resume, progress=progress)
    config = scoring_config or ScoringConfig.from_stored(scoring)
    chosen = references if references is not None else normals[:max_references]
    runtime = build_runtime(chosen, config, text_branch=branch, encoder=encoder)
    # The product's own references stay; the line part of the old bank is replaced by the
    # chosen normals' patches, so the bank follows the line and stays bounded.
    old = champion.runtime
    bank_root, pixel_root = root_rows or (old.bank.shape[0], old.pixel_bank.shape[0])
    runtime.bank = refreshed_bank(old.bank[:bank_root], runtime.bank,
                                  max_bank=config.max_bank, seed=config.seed)
    if runtime.pixel_bank.shape[0] and old.pixel_bank.shape[0]:
        runtime.pixel_bank = refreshed_bank(old.pixel_bank[:pixel_root], runtime.pixel_bank,
                                            max_bank=config.max_bank, seed=config.seed)
    return runtime.eval(), history
