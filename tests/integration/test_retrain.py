"""Retraining end to end on CPU against real Postgres, with real labelled frames
(magnetic tile) seeded into the store: a better challenger is promoted, one
trained on flipped labels is not, and two runs never overlap."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest
from sqlalchemy import Engine, select

from engine.scoring.artifacts import load_model
from engine.scoring.builder import ScoringConfig
from engine.training.datasets import split_category
from engine.training.train import TrainConfig
from engine.training.train_run import train_product
from pipeline.settings import ApiSettings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.frame_store import store_frame
from pipeline.storage.labels import add_label
from pipeline.storage.models import ModelVersion
from pipeline.storage.records import VerdictRecord
from pipeline.storage.repository import (
    activate_model_version,
    active_model_version,
    get_verdict,
    register_model_version,
    write_verdicts,
)
from tests.integration.retrain_support import drawn_region
from workers.retraining.data import group_is_held_out, held_out_group
from workers.retraining.job import RetrainOptions, retrain_product
from workers.retraining.lock import RetrainLockedError, retrain_lock

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCT = "magnetic_tile"
SCORING = ScoringConfig(input_size=160, w_text_pixel=0.5, w_text_image=0.5)
OPTIONS = RetrainOptions(epochs=8, held_out_share=0.35)


@pytest.fixture(scope="module")
def tile_dir(shared_data: Path) -> Path:
    return shared_data / "magnetic-tile" / PRODUCT


@pytest.fixture(scope="module")
def champion_dir(tile_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-shot model with text heads trained on synthetic defects only."""
    out = tmp_path_factory.mktemp("models")
    return train_product(tile_dir.parent, PRODUCT, out, cfg=TrainConfig(epochs=4),
                         scoring=SCORING, shots=1, max_images=12, progress=False)


def _seed(factory, tile_dir: Path, flip_training_labels: bool) -> int:  # noqa: ANN001
    """Frames of test/ as stored verdicts with their images, each confirmed by an operator."""
    split = split_category(tile_dir, shots=0)
    goods = [s for s in split.evaluated if s.label == 0][:40]
    defects = [s for s in split.evaluated if s.label == 1][::4][:40]
    seeded = 0
    t0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # fixed: the same held-out groups every run
    with transaction(factory) as session:
        for i, sample in enumerate(goods + defects):
            # a minute apart: each frame is its own held-out group (workers.retraining.data)
            captured_at = t0 + timedelta(minutes=i)
            data = sample.path.read_bytes()
            image = cv2.imread(str(sample.path))
            regions = drawn_region(sample.mask_path, sample.kind)
            # Stable ids: the hash-based held-out split is then the same on every run.
            frame_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{sample.kind}/{sample.path.name}")
            write_verdicts(session, [VerdictRecord(
                frame_id=frame_id, camera_id="cam-1", line_id="line-1", product=PRODUCT,
                captured_at=captured_at, width=image.shape[1], height=image.shape[0],
                content_type="image/png", model_version="seed", score=0.0, threshold=1.0,
                label="anomalous" if sample.label else "normal", regions=regions)])
            store_frame(session, ApiSettings(frame_storage="database"), frame_id=frame_id,
                        data=data, content_type="image/png")
            verdict = get_verdict(session, frame_id)
            truth = "anomalous" if sample.label else "normal"
            add_label(session, verdict_id=verdict.id, label=truth, author="qa")
            held_out = group_is_held_out(held_out_group(PRODUCT, captured_at,
                                                        OPTIONS.group_seconds),
                                         OPTIONS.held_out_share)
            if flip_training_labels and not held_out:
                flipped = "normal" if sample.label else "anomalous"
                add_label(session, verdict_id=verdict.id, label=flipped, author="saboteur")
            seeded += 1
    return seeded


def _register_champion(factory, champion_dir: Path) -> str:  # noqa: ANN001
    with transaction(factory) as session:
        register_model_version(session, version=champion_dir.name, product=PRODUCT,
                               path=str(champion_dir), threshold=None, metrics={})
        activate_model_version(session, champion_dir.name)
    return champion_dir.name


def test_better_challenger_is_promoted(clean_db: Engine, tile_dir: Path, champion_dir: Path,
                                       tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    champion = _register_champion(factory, champion_dir)
    assert _seed(factory, tile_dir, flip_training_labels=False) == 80
    result = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=OPTIONS, progress=False)
    old = result.champion_metrics["image_auroc"]
    new = result.challenger_metrics["image_auroc"]
    print(f"held-out image AUROC champion {old:.3f} -> challenger {new:.3f}; "
          f"pixel {result.champion_metrics['pixel_auroc']:.3f} -> "
          f"{result.challenger_metrics['pixel_auroc']:.3f}; counts {result.counts}")
    assert result.status == "promoted", result.reason
    assert new > old
    with factory() as session:
        active = active_model_version(session, PRODUCT)
        assert active is not None and active.version == result.challenger_version
        previous = session.scalars(select(ModelVersion).where(
            ModelVersion.version == champion)).one()
        assert previous.status == "retired"
        assert previous.metrics["held_out"]["image_auroc"] == pytest.approx(old)
        assert active.metrics["tensorrt_engine"] == "pending"
        # the pixel map was chosen on the training split's labelled defects (all drawn)
        choice = active.metrics["pixel_map"]
        assert choice["map"] in ("fine", "pooled") and choice["frames"] >= 3
        assert choice["fine_auroc"] > 50 and choice["pooled_auroc"] > 50
    assert list(Path(active.path).glob("*.onnx")) or list(Path(active.path).rglob("*.onnx"))


def test_pooled_map_choice_is_saved_as_one_map(clean_db: Engine, tile_dir: Path,
                                               champion_dir: Path, tmp_path: Path) -> None:
    """A challenger whose labelled defects chose the pooled map is saved and loads with one
    map: no pixel bank, `pixel_pool` None in its stored scoring config."""
    factory = make_session_factory(clean_db)
    _register_champion(factory, champion_dir)
    _seed(factory, tile_dir, flip_training_labels=False)
    result = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=replace(OPTIONS, pixel_map_margin=-100.0), progress=False)
    assert result.status in ("promoted", "rejected"), result.reason
    with factory() as session:
        saved = session.scalars(select(ModelVersion).where(
            ModelVersion.version == result.challenger_version)).one()
    assert saved.metrics["pixel_map"]["map"] == "pooled"
    assert saved.metrics["reference_pixel_bank_rows"] == 0
    loaded = load_model(saved.path)
    assert load_model(champion_dir).runtime.split_maps
    assert not loaded.runtime.split_maps and loaded.runtime.pixel_bank.shape[0] == 0
    assert loaded.metadata["config"]["scoring"]["pixel_pool"] is None
    # from a one-map champion the next retrain builds both maps and chooses again: here
    # the fine map wins (any margin it is given is met), so the version has both again
    with transaction(factory) as session:
        activate_model_version(session, result.challenger_version)
    again = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                            options=replace(OPTIONS, pixel_map_margin=-100.0), progress=False)
    with factory() as session:
        back = session.scalars(select(ModelVersion).where(
            ModelVersion.version == again.challenger_version)).one()
    assert back.metrics["parent"] == result.challenger_version
    assert back.metrics["pixel_map"]["map"] == "fine", back.metrics["pixel_map"]
    assert load_model(back.path).runtime.split_maps


def test_flipped_labels_are_not_promoted(clean_db: Engine, tile_dir: Path, champion_dir: Path,
                                         tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    champion = _register_champion(factory, champion_dir)
    _seed(factory, tile_dir, flip_training_labels=True)
    result = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=OPTIONS, progress=False)
    print(f"corrupted: champion {result.champion_metrics['image_auroc']:.3f} -> challenger "
          f"{result.challenger_metrics['image_auroc']:.3f}: {result.reason}")
    assert result.status == "rejected"
    with factory() as session:
        assert active_model_version(session, PRODUCT).version == champion
        rejected = session.scalars(select(ModelVersion).where(
            ModelVersion.version == result.challenger_version)).one()
        assert rejected.status == "rejected" and rejected.reason == result.reason


def test_dry_run_reports_and_changes_nothing(clean_db: Engine, tile_dir: Path,
                                             champion_dir: Path, tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    _register_champion(factory, champion_dir)
    _seed(factory, tile_dir, flip_training_labels=False)
    result = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=RetrainOptions(dry_run=True), progress=False)
    assert result.status == "dry-run"
    counts = result.counts
    assert counts["train_normal"] + counts["held_out_normal"] == 40
    assert counts["train_anomalous"] + counts["held_out_anomalous"] == 40
    with factory() as session:
        assert len(session.scalars(select(ModelVersion)).all()) == 1


def test_second_run_waits_then_gives_up_with_a_clear_error(pg_engine: Engine) -> None:
    holding, release = threading.Event(), threading.Event()

    def first_run() -> None:
        with retrain_lock(pg_engine):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first_run)
    thread.start()
    assert holding.wait(30)
    try:
        with pytest.raises(RetrainLockedError, match="another retraining run"), \
                retrain_lock(pg_engine, wait_s=1.5):
            pass
    finally:
        release.set()
        thread.join()
    with retrain_lock(pg_engine):  # released: the next run goes ahead
        pass


def test_file_lock_on_sqlite(tmp_path: Path) -> None:
    from pipeline.storage.database import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    with retrain_lock(engine), pytest.raises(RetrainLockedError), retrain_lock(engine):
        pass
