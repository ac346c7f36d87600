"""Versioned model directories: save a CladRuntime with its threshold, prompts and config.

Layout: <model_dir>/<category>/<version>/
    model.pt         state dict of the whole runtime (encoder, bank, text branch)
    config.json      scoring config + text-branch config + bank shape + format version
    thresholds.json  engine.scoring.calibration.Threshold (image threshold + region
                     threshold `pixel`)
    prompts.json     the product's normal/defect prompts (text branch buffers came from them)
    metrics.json     training / validation figures
Loading rebuilds the modules from config.json and loads the state dict: no pretrained
weights package and no training code is needed to serve a saved model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelArtifactError
from engine.scoring.builder import ScoringConfig
from engine.scoring.calibration import Threshold
from engine.scoring.heads import CladTextBranch, branch_from_config
from engine.scoring.prompts import PromptSet
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILES = ("model.pt", "config.json", "thresholds.json", "prompts.json", "metrics.json")


@dataclass(frozen=True)
class ModelMetadata:
    """What is stored beside the weights."""

    category: str
    scoring: ScoringConfig
    threshold: Threshold
    prompts: PromptSet | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str | None = None  # default: UTC timestamp


@dataclass(frozen=True)
class LoadedModel:
    runtime: CladRuntime
    threshold: float
    version: str
    category: str
    prompts: PromptSet | None
    metadata: dict[str, Any]
    pixel_threshold: float  # region threshold on the pixel map (see region_threshold)


def region_threshold(threshold: Threshold, where: str = "model") -> float:
    """The stored region threshold, or for an artefact saved before it existed the image
    threshold, the cut those models served with: the runtime divides both maps by their
    own normal statistic (normal ~ 1), so it is nominally in the pixel map's unit, but
    on textured products it cuts high (magnetic tile: no defect pixel reaches it,
    engine/defects/NOTES.md). The artefact holds no normal maps to do better; anomalous frames
    still get a region (engine.defects.regions.verdict_regions), and a model trained (`clad
    train`) or retrained now stores a calibrated one."""
    if threshold.pixel is not None:
        return float(threshold.pixel)
    log.info("%s has no calibrated region threshold (saved before it existed): regions are "
             "cut at the image threshold %.4g, or the hottest area when nothing passes it; "
             "a model trained or retrained now stores one", where, threshold.value)
    return float(threshold.value)


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_model(runtime: CladRuntime, model_dir: str | Path, meta: ModelMetadata) -> Path:
    """Write a new version directory and return it (never overwrites an existing version)."""
    version = meta.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = Path(model_dir) / meta.category / version
    if out.exists():
        raise ModelArtifactError(f"model version already exists: {out}")
    # write into a temp dir and rename, so a reader never sees a half-written version
    tmp = out.with_name(f".{version}.tmp")
    tmp.mkdir(parents=True, exist_ok=False)
    branch = runtime.text_branch
    config = {
        "format_version": FORMAT_VERSION,
        "category": meta.category,
        "version": version,
        "scoring": meta.scoring.model_dump(mode="json"),
        "bank_shape": list(runtime.bank.shape),
        "text_branch": branch.config() if isinstance(branch, CladTextBranch) else None,
    }
    torch.save(runtime.state_dict(), tmp / "model.pt")
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "thresholds.json", meta.threshold.to_dict())
    _write_json(tmp / "prompts.json", meta.prompts.to_dict() if meta.prompts else None)
    _write_json(tmp / "metrics.json", meta.metrics)
    tmp.rename(out)
    return out


def list_versions(model_dir: str | Path, category: str) -> list[str]:
    """Saved versions of a product, oldest first (versions sort by their timestamp names)."""
    root = Path(model_dir) / category
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve(path: str | Path, category: str | None = None, version: str | None = None) -> Path:
    """A version directory from either itself or <model_dir> + category (+ version, else latest)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if category is None:
        raise ModelArtifactError(f"{path} is not a model version directory; pass a category")
    versions = list_versions(path, category)
    if not versions:
        raise ModelArtifactError(f"no saved model for category {category!r} under {path}")
    return path / category / (version or versions[-1])


def load_model(
    path: str | Path, category: str | None = None, version: str | None = None
) -> LoadedModel:
    """Rebuild the runtime of a saved version; outputs equal those of the saved module."""
    vdir = resolve(path, category, version)
    missing = [f for f in FILES if not (vdir / f).is_file()]
    if missing:
        raise ModelArtifactError(f"{vdir} is missing {missing}")
    config = json.loads((vdir / "config.json").read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelArtifactError(f"{vdir}: unsupported format {config.get('format_version')}")
    cfg = ScoringConfig.from_stored(config["scoring"])
    # pretrained=False: the encoder weights are in model.pt, no weights package needed
    encoder = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    branch = branch_from_config(config["text_branch"]) if config["text_branch"] else None
    runtime = CladRuntime(
        encoder, torch.zeros(*config["bank_shape"]), 1.0, input_size=cfg.input_size,
        pool=cfg.pool, metric=cfg.metric, topk_ratio=cfg.topk_ratio, sigma=cfg.sigma,
        text_branch=branch, w_visual=cfg.w_visual, w_text_pixel=cfg.w_text_pixel,
        w_text_image=cfg.w_text_image, pixel_pool=cfg.pixel_pool,
    )  # fmt: skip
    state = torch.load(vdir / "model.pt", map_location="cpu", weights_only=True)
    runtime.load_state_dict(state)
    runtime.eval()
    threshold = Threshold.from_dict(json.loads((vdir / "thresholds.json").read_text()))
    prompts_raw = json.loads((vdir / "prompts.json").read_text())
    return LoadedModel(
        runtime=runtime,
        threshold=threshold.value,
        pixel_threshold=region_threshold(threshold, str(vdir)),
        version=str(config["version"]),
        category=str(config["category"]),
        prompts=PromptSet.from_dict(prompts_raw) if prompts_raw else None,
        metadata={
            "config": config,
            "threshold": threshold.to_dict(),
            "metrics": json.loads((vdir / "metrics.json").read_text()),
        },
    )
