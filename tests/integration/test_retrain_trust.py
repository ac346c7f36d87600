"""Retraining a plant can trust, on real Postgres with a tiny champion (64 px): an
interrupted run says so and resumes, an unchanged run skips, prune keeps what serves,
and the memory bank follows normals labelled later."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from engine.scoring.artifacts import load_model
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import ModelVersion
from pipeline.storage.repository import register_model_version
from tests.integration.retrain_support import (
    FAST,
    PRODUCT,
    register_champion,
    samples,
    seed,
    tile_dir,
    tiny_champion,
)
from workers.retraining.job import retrain_product
from workers.retraining.retention import prune

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiles(shared_data: Path) -> Path:
    return tile_dir(shared_data)


@pytest.fixture(scope="module")
def champion_path(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_champion(tiles, tmp_path_factory.mktemp("champion"))


def test_unchanged_second_run_skips_with_its_reason(clean_db: Engine, tiles: Path,
                                                    champion_path: Path, tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    register_champion(factory, champion_path)
    seed(factory, samples(tiles, goods=8, defects=6))
    first = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                            options=FAST, progress=False)
    assert first.status in ("promoted", "rejected"), first.reason
    second = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=FAST, progress=False)
    assert second.status == "skipped"
    assert second.reason.startswith(f"nothing new: labelled data and config unchanged since "
                                    f"{first.challenger_version} ({first.status})")
    assert second.fingerprint == first.fingerprint
    # another training config is something new
    longer = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=replace(FAST, epochs=3), progress=False)
    assert longer.status in ("promoted", "rejected") and longer.fingerprint != first.fingerprint
    with factory() as session:
        assert len(session.scalars(select(ModelVersion)).all()) == 3  # champion + 2 runs
    # a new label is something new
    seed(factory, samples(tiles, goods=1, defects=0, offset=20), author="qa2")
    third = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                            options=replace(FAST, epochs=3), progress=False)
    assert third.status in ("promoted", "rejected") and third.fingerprint != longer.fingerprint


def _version(factory, model_dir: Path, version: str, status: str,  # noqa: ANN001
             promoted_at: datetime | None = None) -> Path:
    path = model_dir / PRODUCT / version
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"x" * 1000)
    with transaction(factory) as session:
        row = register_model_version(session, version=version, product=PRODUCT, path=str(path),
                                     threshold=1.0, metrics={})
        row.status, row.promoted_at = status, promoted_at
    return path


def test_prune_removes_rejected_and_stale_work_never_active_or_previous(
        clean_db: Engine, tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    t0 = datetime.now(UTC) - timedelta(days=3)
    older = _version(factory, tmp_path, "v1", "retired", t0)
    previous = _version(factory, tmp_path, "v2", "retired", t0 + timedelta(days=1))
    active = _version(factory, tmp_path, "v3", "active", t0 + timedelta(days=2))
    rejected = [_version(factory, tmp_path, f"r{i}", "rejected") for i in range(3)]
    unregistered = tmp_path / PRODUCT / "20260101T000000"  # a `clad train` output, not ours
    unregistered.mkdir()
    stale = tmp_path / ".work" / PRODUCT / "retrain-old"
    fresh = tmp_path / ".work" / PRODUCT / "retrain-new"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(b"c" * 500)
    week_ago = time.time() - 8 * 86_400
    os.utime(stale / "checkpoint.pt", (week_ago, week_ago))
    os.utime(stale, (week_ago, week_ago))

    dry = prune(factory, tmp_path, keep_rejected=1, dry_run=True)
    assert sorted(dry.removed_versions) == ["r0", "r1"] and all(p.exists() for p in rejected)

    report = prune(factory, tmp_path, keep_rejected=1)
    assert sorted(report.removed_versions) == ["r0", "r1"]  # r2, the newest, is kept
    assert report.removed_work == [f".work/{PRODUCT}/retrain-old"]
    assert report.kept == {"v3": "active", "v2": "previous active"}
    assert not rejected[0].exists() and not rejected[1].exists() and rejected[2].exists()
    assert active.exists() and previous.exists() and older.exists() and unregistered.exists()
    assert fresh.exists() and not stale.exists()
    assert report.freed_bytes == 2 * 1000 + 500
    with factory() as session:
        pruned = {r.version: r.metrics.get("pruned_at") for r in session.scalars(
            select(ModelVersion))}
    assert pruned["r0"] and pruned["r1"] and not pruned["r2"] and not pruned["v3"]
    # nothing left to do: a second prune removes nothing
    again = prune(factory, tmp_path, keep_rejected=1)
    assert again.removed_versions == [] and again.removed_work == []


def _retrain_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli.main", "retrain", "--json",
                             *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_mid_retrain_exits_non_zero_says_where_and_resumes(
        clean_db: Engine, postgres_url: str, tiles: Path, champion_path: Path,
        tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    register_champion(factory, champion_path)
    # the CLI splits 30 % of the groups off: with 8 defects one is held out (fixed times)
    seed(factory, samples(tiles, goods=8, defects=8))
    env = {**os.environ, "CLAD_DATABASE_URL": postgres_url, "CLAD_MODEL_DIR": str(tmp_path),
           "CLAD_FRAME_STORAGE": "database", "OMP_NUM_THREADS": "1"}
    env.pop("CLAD_ENGINE_FACTORY", None)
    epochs = "400"
    run = _retrain_cli(env, "--epochs", epochs)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(f".work/{PRODUCT}/retrain-*/checkpoint.pt")):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)
    time.sleep(1.0)  # a few more epochs
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, err
    stopped = [line for line in err.splitlines() if "retrain stopped by SIGTERM" in line]
    assert len(stopped) == 1, err
    assert f"product {PRODUCT}, step 'fine-tuning" in stopped[0]
    assert "checkpoint after epoch" in stopped[0]
    assert "the next run resumes from the last checkpoint" in stopped[0]
    report = json.loads(out)
    assert report["status"] == "interrupted" and report["exit_code"] == 143
    with factory() as session:
        assert len(session.scalars(select(ModelVersion)).all()) == 1  # nothing registered
    epoch_done = int(stopped[0].split("checkpoint after epoch ")[1].split()[0])
    assert 1 <= epoch_done < int(epochs)

    again = _retrain_cli(env, "--epochs", epochs)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    resumed = [line for line in err.splitlines() if "resuming from the checkpoint" in line]
    assert len(resumed) == 1, err
    resumed_at = int(resumed[0].split("after epoch ")[1].split()[0])
    assert resumed_at >= epoch_done
    report = json.loads(out)
    assert report["status"] == "done" and report["exit_code"] == 0
    (result,) = report["results"]
    assert result["status"] in ("promoted", "rejected")
    history = load_model(tmp_path / PRODUCT / result["challenger_version"]).metadata["metrics"][
        "history"]
    assert [h["epoch"] for h in history] == [-1, *range(int(epochs))]  # every epoch, once
    assert not list(tmp_path.glob(f".work/{PRODUCT}/retrain-*"))  # the checkpoint is spent


def _brighter(image):  # noqa: ANN001, ANN202 - a lighting change on the line
    import cv2

    return cv2.convertScaleAbs(image, alpha=1.3, beta=40)


def test_normals_labelled_after_a_retrain_enter_the_bank_and_its_size_stays_bounded(
        clean_db: Engine, tiles: Path, champion_path: Path, tmp_path: Path) -> None:
    factory = make_session_factory(clean_db)
    register_champion(factory, champion_path)
    options = replace(FAST, max_references=4)
    t0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # fixed: the same held-out groups
    seed(factory, samples(tiles, goods=12, defects=6), captured_at=t0)
    first = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                            options=options, progress=False)
    assert first.status in ("promoted", "rejected"), first.reason
    # after the first retrain the lighting changes; operators confirm the new normals
    later = seed(factory, samples(tiles, goods=6, defects=0, offset=12), author="qa2",
                 captured_at=t0 + timedelta(days=9), transform=_brighter)
    second = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=options, progress=False)
    assert second.status in ("promoted", "rejected"), second.reason
    one = load_model(tmp_path / PRODUCT / first.challenger_version)
    two = load_model(tmp_path / PRODUCT / second.challenger_version)
    with factory() as session:
        from pipeline.storage.models import Verdict

        later_frames = {str(f) for f in session.scalars(
            select(Verdict.frame_id).where(Verdict.id.in_(later)))}
    chosen = two.metadata["metrics"]["bank_frames"]
    assert len(chosen) == 4
    new_in_bank = later_frames & set(chosen)
    print(f"bank frames of the second retrain: {len(new_in_bank)} of {len(chosen)} labelled "
          f"after the first; bank rows {champion_rows(champion_path)} (champion) -> "
          f"{one.runtime.bank.shape[0]} -> {two.runtime.bank.shape[0]}")
    # the newest normal always enters, and the changed look wins most of the places
    assert len(new_in_bank) >= 3
    assert not later_frames & set(one.metadata["metrics"]["bank_frames"])
    # the line part is replaced, not appended to: the bank does not grow retrain after
    # retrain (the product's own references stay in front)
    root = one.metadata["metrics"]["reference_bank_rows"]
    assert two.metadata["metrics"]["reference_bank_rows"] == root == champion_rows(champion_path)
    assert two.runtime.bank.shape[0] == one.runtime.bank.shape[0]
    import torch

    assert torch.equal(two.runtime.bank[:root], one.runtime.bank[:root])


def champion_rows(path: Path) -> int:
    return int(load_model(path).runtime.bank.shape[0])


def test_conflicting_labels_are_counted_and_can_be_left_out(
        clean_db: Engine, tiles: Path, champion_path: Path, tmp_path: Path) -> None:
    from pipeline.storage.labels import add_label

    factory = make_session_factory(clean_db)
    register_champion(factory, champion_path)
    ids = seed(factory, samples(tiles, goods=8, defects=6))
    with transaction(factory) as session:  # a second person turns 3 anomalies into normals
        for vid in ids[8:11]:
            add_label(session, verdict_id=vid, label="normal", author="second-shift")
    counted = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                              options=replace(FAST, dry_run=True), progress=False)
    c = counted.counts
    assert c["label_conflicts"] == 3 and "excluded_conflicts" not in c
    assert c["train_normal"] + c["held_out_normal"] == 8 + 3  # the latest word still wins
    left_out = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                               options=replace(FAST, dry_run=True, exclude_conflicts=True),
                               progress=False)
    c = left_out.counts
    assert c["label_conflicts"] == 3 and c["excluded_conflicts"] == 3
    assert c["train_normal"] + c["held_out_normal"] == 8
    assert c["train_anomalous"] + c["held_out_anomalous"] == 6 - 3


def test_held_out_evaluation_scores_as_the_worker_does_line_context_included(
        clean_db: Engine, tiles: Path, champion_path: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from engine.scoring.line_context import ContextConfig
    from workers.retraining.data import ConfirmedFrame
    from workers.retraining.evaluation import evaluate, worker_scorer

    champion = load_model(champion_path)
    t0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    frames = []
    for i, s in enumerate(samples(tiles, goods=10, defects=4)):
        image = cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE) if s.mask_path else None)
        frames.append(ConfirmedFrame(uuid.uuid4(),
                                     "anomalous" if s.label else "normal", image, mask,
                                     t0 + timedelta(minutes=i)))
    size, threshold = int(champion.runtime.input_size), champion.threshold
    bare = evaluate(champion.runtime, frames, threshold)
    plain = evaluate(worker_scorer(champion.runtime, threshold, "c", None), frames, threshold,
                     input_size=size)
    # without a context the worker's path is the runtime itself
    assert plain == pytest.approx(bare, abs=1e-6, nan_ok=True)
    context = ContextConfig(max_frames=8, min_frames=3)
    scored: list[float] = []
    scorer = worker_scorer(champion.runtime, threshold, "c", context)

    def recording(x, when):  # noqa: ANN001, ANN202
        out = scorer(x, when)
        scored.extend(np.asarray(out[0]).tolist())
        return out
    with_context = evaluate(recording, frames, threshold, input_size=size, batch=4)
    assert 0.0 <= with_context["image_auroc"] <= 1.0
    # the context fills from the earlier batches: later frames score otherwise than bare
    reference_only, _ = worker_scorer(champion.runtime, threshold, "c", None)(
        np.stack([cv2.resize(f.image, (size, size), interpolation=cv2.INTER_AREA)
                  for f in frames]), 0.0)
    assert np.allclose(scored[:4], reference_only[:4], atol=1e-5)  # empty context at first
    assert not np.allclose(scored[4:], reference_only[4:], atol=1e-5)
    print(f"held-out image AUROC, tiny champion: references only {plain['image_auroc']:.3f}, "
          f"with the line context {with_context['image_auroc']:.3f}")

    # the job evaluates with the context it is given, and says so
    factory = make_session_factory(clean_db)
    register_champion(factory, champion_path)
    seed(factory, samples(tiles, goods=8, defects=6))
    result = retrain_product(factory, PRODUCT, model_dir=tmp_path, frame_dir=tmp_path,
                             options=FAST, progress=False, context=context)
    assert result.status in ("promoted", "rejected"), result.reason
    saved = load_model(tmp_path / PRODUCT / result.challenger_version)
    assert saved.metadata["metrics"]["evaluated_with_line_context"] is True


def test_schedule_daemon_stopped_by_sigterm_exits_143_and_says_so(tmp_path: Path) -> None:
    from pipeline.storage.database import make_engine
    from pipeline.storage.migrate import upgrade

    db_url = f"sqlite:///{tmp_path / 'clad.db'}"
    upgrade(make_engine(db_url))
    env = {**os.environ, "CLAD_DATABASE_URL": db_url, "CLAD_MODEL_DIR": str(tmp_path)}
    daemon = _retrain_cli(env, "--schedule", "0 3 * * *")
    deadline = time.monotonic() + 120
    err = ""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(daemon.stderr, selectors.EVENT_READ)
    while "next retraining run at" not in err:
        assert daemon.poll() is None, daemon.communicate()
        assert time.monotonic() < deadline, err
        if selector.select(timeout=0.5):
            err += daemon.stderr.readline()
    daemon.send_signal(signal.SIGTERM)
    out, rest = daemon.communicate(timeout=60)
    err += rest
    assert daemon.returncode == 143, err
    stopped = [line for line in err.splitlines() if "retrain stopped by SIGTERM" in line]
    assert len(stopped) == 1 and "while waiting for the run at" in stopped[0], err
    assert json.loads(out)["status"] == "interrupted"
