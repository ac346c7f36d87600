"""`clad retrain`: learn from operator labels, champion vs challenger, safe promotion.

One run per product, in steps (each logged with its elapsed time, see
workers.retraining.progress):
1. collect the confirmed frames and fingerprint them with the training config; a
   fingerprint a retrain from this same champion already had is skipped (nothing new);
2. model: fine-tune a challenger from the active model (checkpointed every epoch: an
   interrupted run over the same frames resumes where it stopped), its memory bank from
   the recent confirmed normals (engine.training.bank_refresh); recalibrate its threshold
   on a calibration share of the training frames; evaluate both on the frozen held-out
   frames; save it as a new version, staged under models/.work, registered, then moved
   into place (a directory the database does not name is never served); promote (export
   ONNX, flip the active version; workers reload between batches) only when
   workers.retraining.evaluation.decide says so, else keep it as a rejected candidate;
3. further steps that use the model step's outcome go after it in retrain_product.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.evaluation.map_choice import MARGIN as MAP_MARGIN
from engine.evaluation.map_choice import apply_choice, choose_pixel_map, current_map
from engine.scoring.artifacts import LoadedModel, ModelMetadata, load_model, save_model
from engine.scoring.builder import ScoringConfig
from engine.scoring.calibration import Threshold, calibrate
from engine.scoring.runtime_model import CladRuntime
from engine.training.bank_refresh import (
    frame_embeddings,
    half_life_from_days,
    root_rows,
    select_references,
)
from engine.training.finetune import LabelledImage, finetune_challenger
from engine.training.train import TrainConfig
from pipeline.storage.database import transaction
from pipeline.storage.labels import conflicted_verdicts, training_examples
from pipeline.storage.models import ModelVersion
from pipeline.storage.repository import (
    active_model_version,
    register_model_version,
)
from workers.retraining.data import ConfirmedFrame, RetrainData, collect, is_held_out
from workers.retraining.describer_step import DescriberOptions, carry_describer, retrain_describer
from workers.retraining.evaluation import (
    Decision,
    decide,
    evaluate,
    frame_scores,
    worker_scorer,
)
from workers.retraining.fingerprint import data_fingerprint, unchanged_since
from workers.retraining.placement import place_registered
from workers.retraining.progress import Progress, checkpoint_epoch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOptions:
    held_out_share: float = 0.3  # of the groups of frames (workers.retraining.data)
    group_seconds: float = 10.0  # frames captured within one such block split together
    calibration_share: float = 0.25  # of the training frames, for the threshold only
    tolerance: float = 0.02
    epochs: int = 15
    seed: int = 0
    min_train_normals: int = 2
    export_onnx: bool = True
    dry_run: bool = False
    force: bool = False  # retrain even when the fingerprint is unchanged
    exclude_conflicts: bool = False  # leave out frames whose labels conflict
    max_references: int = 16  # confirmed normals whose patches enter the memory bank
    bank_window_days: float = 30.0  # ... chosen among the normals captured this recently
    bank_half_life_days: float = 7.0  # recency weight of a normal in that choice
    describer_steps: int = 300  # training steps of the describer step (describer_step.py)
    # pixel AUROC points the pooled map must gain on the labelled defects to replace the
    # fine one (engine.evaluation.map_choice)
    pixel_map_margin: float = MAP_MARGIN

    def fingerprinted(self) -> dict[str, object]:
        """The options that change what a run learns (not how it reports)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("dry_run", "force", "export_onnx", "tolerance")}


@dataclass
class RetrainResult:
    product: str
    status: str  # promoted | rejected | skipped | dry-run | failed
    reason: str
    counts: dict[str, int] = field(default_factory=dict)
    champion_version: str | None = None
    challenger_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    fingerprint: str | None = None
    elapsed_s: float = 0.0
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


def _bank_normals(champion: LoadedModel, normals: list[ConfirmedFrame],
                  options: RetrainOptions) -> list[ConfirmedFrame]:
    """The confirmed normals whose patches enter the bank: a recency-weighted core-set over
    those captured within the window (all of them when none is that recent)."""
    newest = max(f.captured_at for f in normals)
    window = [f for f in normals
              if (newest - f.captured_at).total_seconds() <= options.bank_window_days * 86_400]
    pool = window or normals
    if len(pool) <= options.max_references:
        return pool
    size = int(champion.runtime.input_size)
    embeddings = frame_embeddings(champion.runtime.encoder, [f.image for f in pool], size)
    ages = np.array([(newest - f.captured_at).total_seconds() for f in pool])
    picked = select_references(embeddings, ages, options.max_references,
                               half_life_s=half_life_from_days(options.bank_half_life_days))
    return [pool[i] for i in picked]


def _previous_retrains(session: Session, product: str) -> list[tuple[str, str, dict]]:
    rows = session.execute(select(ModelVersion.version, ModelVersion.status, ModelVersion.metrics)
                           .where(ModelVersion.product == product)
                           .order_by(ModelVersion.created_at.desc())).all()
    return [(v, s, m or {}) for v, s, m in rows]


def retrain_product(factory: sessionmaker[Session], product: str, *, model_dir: Path,
                    frame_dir: Path, options: RetrainOptions,
                    progress: bool = True, tracker: Progress | None = None,
                    context: object | None = None) -> RetrainResult:
    """The scoring model, then the describer on whichever model is active after it.
    `tracker` says where the run stands (for the line an interrupted run logs); one is
    made when not given. `context`: the worker's line context
    (workers.streaming.scoring.context_config), used when the scoring champion and
    challenger are evaluated."""
    step = tracker or Progress(product)
    step.product = product
    result = _retrain_scoring(factory, product, model_dir=model_dir, frame_dir=frame_dir,
                              options=options, progress=progress, step=step, context=context)
    with step("training the describer"):
        result.describer = retrain_describer(
            factory, product, model_dir=model_dir, frame_dir=frame_dir,
            options=DescriberOptions(steps=options.describer_steps, seed=options.seed,
                                     dry_run=options.dry_run,
                                     force=options.force)).as_dict()
    result.elapsed_s = round(step.elapsed(), 1)
    return result


def _retrain_scoring(factory: sessionmaker[Session], product: str, *, model_dir: Path,
                     frame_dir: Path, options: RetrainOptions, progress: bool,
                     step: Progress, context: object | None = None) -> RetrainResult:
    """One product's scoring model, step by step (see the module doc)."""
    result = RetrainResult(product, "skipped", "")
    with step("collecting confirmed frames"), factory() as session:
        champion_row = active_model_version(session, product)
        if champion_row is None:
            result.reason = f"no active model for product {product!r}: promote one first"
            return result
        examples = training_examples(session, product=product)
        conflicted = conflicted_verdicts(session, product)
        conflicts = {"label_conflicts": sum(e.verdict_id in conflicted for e in examples)}
        if options.exclude_conflicts:
            examples = [e for e in examples if e.verdict_id not in conflicted]
            conflicts["excluded_conflicts"] = conflicts["label_conflicts"]
        elif conflicts["label_conflicts"]:
            log.warning("product %s: %d confirmed frames have conflicting labels (the latest "
                        "wins; see the review queue, or --exclude-conflicts)", product,
                        conflicts["label_conflicts"])
        result.counts = dict(conflicts)
        # the evaluation's line context decides promotions too: part of the config
        config = {"options": options.fingerprinted(), "line_context": repr(context),
                  "champion_config": _stored_config(champion_row.path)}
        result.fingerprint = data_fingerprint(examples, config=config)
        previous = unchanged_since(result.fingerprint, champion_row.version,
                                   _previous_retrains(session, product))
        if previous is not None and not options.force:
            result.champion_version = champion_row.version
            result.reason = (f"nothing new: labelled data and config unchanged since "
                             f"{previous[0]} ({previous[1]}); --force retrains anyway")
            log.info("product %s: skipped, %s", product, result.reason)
            return result
        data: RetrainData = collect(session, product, frame_dir=frame_dir,
                                    held_out_share=options.held_out_share,
                                    group_seconds=options.group_seconds, examples=examples)
    result.counts = {**data.counts(), **conflicts}
    result.champion_version = champion_row.version
    fit, calib = _split_calibration(data.train, options.calibration_share)
    normals = [f for f in fit if f.label == "normal"]
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
    held = {f.label for f in data.held_out}
    if held != {"normal", "anomalous"}:
        # No comparison is possible, so no challenger could be promoted: say so before
        # minutes of training rather than after.
        result.reason = (f"the held-out frames ({len(data.held_out)}) hold no "
                         f"{'normal' if 'normal' not in held else 'anomalous'} frame: label "
                         "frames from more moments (frames of one "
                         f"{options.group_seconds:g} s block split together)")
        return result
    _model_step(factory, result, data, fit, calib, champion_row.path, model_dir=model_dir,
                options=options, progress=progress, step=step, context=context)
    return result


def _stored_config(path: str) -> object:
    """The scoring config a version was saved with (what the fingerprint covers)."""
    import json

    try:
        return json.loads((Path(path) / "config.json").read_text()).get("scoring")
    except (OSError, ValueError):
        return None


def _model_step(factory: sessionmaker[Session], result: RetrainResult, data: RetrainData,
                fit: list[ConfirmedFrame], calib: list[ConfirmedFrame], champion_path: str, *,
                model_dir: Path, options: RetrainOptions, progress: bool,
                step: Progress, context: object | None) -> None:
    """Fine-tune, calibrate, evaluate, save, register and maybe promote the challenger;
    fills `result`."""
    product = result.product
    normals = [f for f in fit if f.label == "normal"]
    anomalies = [LabelledImage(f.image, f.mask) for f in fit if f.label == "anomalous"]
    with step("loading the champion"):
        champion = load_model(champion_path)
    with step("choosing the memory bank's normals"):
        bank_frames = _bank_normals(champion, normals, options)
    stored = champion.metadata["metrics"]
    roots = (root_rows(champion.runtime.bank.shape[0], stored.get("reference_bank_rows")),
             root_rows(champion.runtime.pixel_bank.shape[0],
                       stored.get("reference_pixel_bank_rows")))
    scoring = ScoringConfig.from_stored(champion.metadata["config"]["scoring"])
    in_use = current_map(scoring)
    if in_use == "pooled":  # both maps again, so that the labels can choose anew
        scoring = scoring.model_copy(update={"pixel_pool": ScoringConfig().pixel_pool})
    cfg = TrainConfig(epochs=options.epochs, seed=options.seed)
    # Keyed by what is trained on: an interrupted run over the same frames resumes from
    # its last epoch; any other data gets its own checkpoint and never mixes with it.
    key = hashlib.sha256("|".join([champion.version, str(options.seed), *sorted(
        f"{f.frame_id}:{f.label}" for f in fit)]).encode()).hexdigest()[:16]
    work_dir = model_dir / ".work" / product / f"retrain-{key}"
    step.checkpoint = work_dir / "checkpoint.pt"
    done = checkpoint_epoch(step.checkpoint)
    if done is not None:
        log.info("product %s: resuming from the checkpoint after epoch %d of %d in %s",
                 product, done + 1, options.epochs, work_dir)
    with step(f"fine-tuning ({len(normals)} normal, {len(anomalies)} anomalous frames, "
              f"{options.epochs} epochs)"):
        runtime, history = finetune_challenger(
            champion, [f.image for f in normals], anomalies, cfg, work_dir=work_dir,
            resume=True, progress=progress, references=[f.image for f in bank_frames],
            root_rows=roots, scoring_config=scoring)
    with step(f"choosing the pixel map on {len(anomalies)} labelled defect frames"):
        # the product's own defects decide between the fine and the pooled map
        # (engine.evaluation.map_choice); the held-out comparison below still judges it
        map_choice = choose_pixel_map(runtime, [a.image for a in anomalies],
                                      [a.mask for a in anomalies],
                                      margin=options.pixel_map_margin, current=in_use)
        runtime, scoring = apply_choice(runtime, scoring, map_choice)
    log.info("product %s: %s pixel map (%s)", product, map_choice.map, map_choice.reason)
    with step(f"calibrating the threshold on {len(calib)} frames"):
        threshold = _calibrate(runtime, calib, fit)
    version = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-retrain"
    size = int(champion.runtime.input_size)
    with step(f"evaluating champion and challenger on {len(data.held_out)} held-out frames "
              f"(as the worker scores, line context {'on' if context else 'off'})"):
        result.champion_metrics = evaluate(
            worker_scorer(champion.runtime, champion.threshold, champion.version, context),
            data.held_out, champion.threshold, input_size=size)
        result.challenger_metrics = evaluate(
            worker_scorer(runtime, threshold.value, version, context),
            data.held_out, threshold.value, input_size=size)
    decision = decide(result.challenger_metrics, result.champion_metrics,
                      tolerance=options.tolerance)
    metrics = {"parent": champion.version, "counts": result.counts,
               "fingerprint": result.fingerprint,
               "reference_bank_rows": roots[0],
               "reference_pixel_bank_rows": roots[1] if runtime.split_maps else 0,
               "bank_frames": [str(f.frame_id) for f in bank_frames],
               "pixel_map": map_choice.as_dict(),
               "evaluated_with_line_context": context is not None}
    meta = ModelMetadata(product, scoring, threshold, champion.prompts, {
                             **metrics, "history": history.epochs,
                             "held_out": result.challenger_metrics,
                             "champion_held_out": result.champion_metrics,
                             "text_encoder": stored.get("text_encoder"),
                             "options": asdict(options)}, version=version)
    with step(f"saving version {version}"):
        path = _save_registered(factory, runtime, meta, model_dir=model_dir,
                                export_onnx=decision.promote and options.export_onnx,
                                db_metrics={**metrics,
                                            "held_out": _finite(result.challenger_metrics),
                                            "champion_held_out":
                                                _finite(result.champion_metrics),
                                            # built by the first GPU worker that loads it
                                            "tensorrt_engine": "pending"},
                                champion_version=champion.version,
                                champion_metrics=result.champion_metrics, decision=decision,
                                describer_from=champion_path)
    shutil.rmtree(work_dir, ignore_errors=True)  # saved: the checkpoint has done its job
    result.challenger_version = version
    result.status = "promoted" if decision.promote else "rejected"
    result.reason = decision.reason
    log.info("product %s: challenger %s %s (%s), saved in %s", product, version, result.status,
             result.reason, path)


def _save_registered(factory: sessionmaker[Session], runtime: CladRuntime, meta: ModelMetadata,
                     *, model_dir: Path, export_onnx: bool, db_metrics: dict,
                     champion_version: str, champion_metrics: dict[str, float],
                     decision: Decision, describer_from: str) -> Path:
    """Save under models/.work, register (as rejected or candidate), move into place, then
    activate if promoted (workers.retraining.placement)."""
    product, version = meta.category, str(meta.version)
    staged = save_model(runtime, model_dir / ".work" / product / f"staged-{version}", meta)
    carry_describer(describer_from, staged)  # same encoder: the learned words stay valid
    if export_onnx:
        from engine.runtime.export import ensure_onnx

        ensure_onnx(runtime, staged)
    final = model_dir / product / version
    with transaction(factory) as session:
        row = register_model_version(session, version=version, product=product,
                                     path=str(final), threshold=meta.threshold.value,
                                     metrics=db_metrics)
        champion_db = session.scalars(select(ModelVersion).where(
            ModelVersion.version == champion_version)).one_or_none()
        if champion_db is not None:
            champion_db.metrics = {**champion_db.metrics,
                                   "held_out": _finite(champion_metrics)}
        row.status = "candidate" if decision.promote else "rejected"
        row.reason = decision.reason
    place_registered(factory, staged, final, activate=decision.promote)
    shutil.rmtree(staged.parent.parent, ignore_errors=True)  # the empty staging dirs
    return final


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON columns hold no NaN: an undefined metric is stored as null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in metrics.items()}
