"""`clad retrain`: learn from operator labels, champion vs challenger, safe promotion.

One run per product: collect confirmed frames, fine-tune a challenger from the
active model, recalibrate its threshold on a calibration share of the training
frames, evaluate both on the frozen held-out frames, save the challenger as a new
version and record both sets of figures; promote (export ONNX, flip the active
version; workers reload between batches) only when the rule in
workers.retraining.evaluation.decide says so, else keep it as a rejected candidate. Training
checkpoints every epoch; a run interrupted over the same frames resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.scoring.artifacts import ModelMetadata, load_model, save_model
from engine.scoring.builder import ScoringConfig
from engine.scoring.calibration import Threshold, calibrate
from engine.scoring.runtime_model import CladRuntime
from engine.training.finetune import LabelledImage, finetune_challenger
from engine.training.train import TrainConfig
from pipeline.storage.database import transaction
from pipeline.storage.models import ModelVersion
from pipeline.storage.repository import (
    activate_model_version,
    active_model_version,
    register_model_version,
)
from workers.retraining.data import ConfirmedFrame, RetrainData, collect, is_held_out
from workers.retraining.describer_step import DescriberOptions, carry_describer, retrain_describer
from workers.retraining.evaluation import decide, evaluate, frame_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOptions:
    held_out_share: float = 0.3
    calibration_share: float = 0.25  # of the training frames, for the threshold only
    tolerance: float = 0.02
    epochs: int = 15
    seed: int = 0
    min_train_normals: int = 2
    export_onnx: bool = True
    dry_run: bool = False
    describer_steps: int = 300  # training steps of the describer step (describer_step.py)


@dataclass
class RetrainResult:
    product: str
    status: str  # promoted | rejected | skipped | dry-run
    reason: str
    counts: dict[str, int] = field(default_factory=dict)
    champion_version: str | None = None
    challenger_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    describer: dict[str, Any] = field(default_factory=dict)  # DescriberResult.as_dict()


def _split_calibration(frames: list[ConfirmedFrame],
                       share: float) -> tuple[list[ConfirmedFrame], list[ConfirmedFrame]]:
    # An independent hash split: calibration frames are not fitted on either.
    in_calib = [is_held_out(f.frame_id, share, salt=b"clad-calibration") for f in frames]
    fit = [f for f, c in zip(frames, in_calib, strict=True) if not c]
    calib = [f for f, c in zip(frames, in_calib, strict=True) if c]
    return fit, calib


def _calibrate(runtime: CladRuntime, calib: list[ConfirmedFrame],
               fit: list[ConfirmedFrame]) -> Threshold:
    """Max-F1 on the calibration frames when they hold both classes; else a 1 % false
    alarm rate on whichever normals the job has (calibration first, else fitted ones)."""
    frames = calib if any(f.label == "normal" for f in calib) else [
        f for f in fit if f.label == "normal"]
    scores, peaks = frame_scores(runtime, frames)
    labels = np.array([f.label == "anomalous" for f in frames], int)
    normal_peaks = [np.array([p]) for p, y in zip(peaks, labels, strict=True) if not y]
    return calibrate(np.array(scores), labels, normal_maps=normal_peaks)


def retrain_product(factory: sessionmaker[Session], product: str, *, model_dir: Path,
                    frame_dir: Path, options: RetrainOptions,
                    progress: bool = True) -> RetrainResult:
    """The scoring model, then the describer on whichever model is active after it."""
    result = _retrain_scoring(factory, product, model_dir=model_dir, frame_dir=frame_dir,
                              options=options, progress=progress)
    result.describer = retrain_describer(factory, product, model_dir=model_dir,
                                         frame_dir=frame_dir, options=DescriberOptions(
                                             steps=options.describer_steps, seed=options.seed,
                                             dry_run=options.dry_run)).as_dict()
    return result


def _retrain_scoring(factory: sessionmaker[Session], product: str, *, model_dir: Path,
                     frame_dir: Path, options: RetrainOptions,
                     progress: bool = True) -> RetrainResult:
    with factory() as session:
        data: RetrainData = collect(session, product, frame_dir=frame_dir,
                                    held_out_share=options.held_out_share)
        champion_row = active_model_version(session, product)
    result = RetrainResult(product, "skipped", "", counts=data.counts())
    if champion_row is None:
        result.reason = f"no active model for product {product!r}: promote one first"
        return result
    result.champion_version = champion_row.version
    fit, calib = _split_calibration(data.train, options.calibration_share)
    normals = [f.image for f in fit if f.label == "normal"]
    anomalies = [LabelledImage(f.image, f.mask) for f in fit if f.label == "anomalous"]
    result.counts.update(fit_normal=len(normals), fit_anomalous=len(anomalies),
                         calibration=len(calib))
    if options.dry_run:
        result.status = "dry-run"
        result.reason = (f"would fine-tune {champion_row.version} on {len(normals)} normal and "
                         f"{len(anomalies)} anomalous frames, calibrate on {len(calib)}, "
                         f"evaluate on {len(data.held_out)} held-out frames")
        return result
    if len(normals) < options.min_train_normals:
        result.reason = (f"only {len(normals)} confirmed normal training frames "
                         f"(need {options.min_train_normals})")
        return result
    champion = load_model(champion_row.path)
    cfg = TrainConfig(epochs=options.epochs, seed=options.seed)
    # Keyed by what is trained on: an interrupted run over the same frames resumes from
    # its last epoch; any other data gets its own checkpoint and never mixes with it.
    key = hashlib.sha256("|".join([champion.version, str(options.seed), *sorted(
        f"{f.frame_id}:{f.label}" for f in fit)]).encode()).hexdigest()[:16]
    work_dir = model_dir / ".work" / product / f"retrain-{key}"
    runtime, history = finetune_challenger(champion, normals, anomalies, cfg,
                                           work_dir=work_dir, resume=True, progress=progress)
    threshold = _calibrate(runtime, calib, fit)
    result.champion_metrics = evaluate(champion.runtime, data.held_out, champion.threshold)
    result.challenger_metrics = evaluate(runtime, data.held_out, threshold.value)
    decision = decide(result.challenger_metrics, result.champion_metrics,
                      tolerance=options.tolerance)
    version = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-retrain"
    scoring = ScoringConfig.from_stored(champion.metadata["config"]["scoring"])
    meta = ModelMetadata(product, scoring, threshold, champion.prompts, {
                             "parent": champion.version, "history": history.epochs,
                             "counts": result.counts, "held_out": result.challenger_metrics,
                             "champion_held_out": result.champion_metrics,
                             "text_encoder": champion.metadata["metrics"].get("text_encoder"),
                             "options": asdict(options)}, version=version)
    path = save_model(runtime, model_dir, meta)
    carry_describer(champion_row.path, path)  # same encoder: the learned words stay valid
    shutil.rmtree(work_dir, ignore_errors=True)  # saved: the checkpoint has done its job
    result.challenger_version = version
    if decision.promote and options.export_onnx:
        from engine.runtime.export import ensure_onnx

        ensure_onnx(runtime, path)
    with transaction(factory) as session:
        row = register_model_version(session, version=version, product=product, path=str(path),
                                     threshold=threshold.value,
                                     metrics={"held_out": _finite(result.challenger_metrics),
                                              "champion_held_out":
                                                  _finite(result.champion_metrics),
                                              "counts": result.counts,
                                              "parent": champion.version,
                                              # built by the first GPU worker that loads it
                                              "tensorrt_engine": "pending"})
        champion_db = session.scalars(select(ModelVersion).where(
            ModelVersion.version == champion.version)).one_or_none()
        if champion_db is not None:
            champion_db.metrics = {**champion_db.metrics,
                                   "held_out": _finite(result.champion_metrics)}
        if decision.promote:
            activate_model_version(session, version)
        else:
            row.status = "rejected"
        row.reason = decision.reason
    result.status = "promoted" if decision.promote else "rejected"
    result.reason = decision.reason
    log.info("product %s: challenger %s %s (%s)", product, version, result.status, result.reason)
    return result


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON columns hold no NaN: an undefined metric is stored as null.
    return {k: (None if v != v else v) for k, v in metrics.items()}
