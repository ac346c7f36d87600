"""The learning loop on the real services (issue 29): a worker scores a stream, an
operator names regions through the HTTP API, `clad retrain` trains and promotes the
product's describer, later frames carry the learned kinds in Postgres and in the
Redis cache; a challenger trained on a saboteur's swapped words is worse on the
held-out regions and is not promoted.

The product is drawn: a striped part, a bright streak or a dark blot on some. Its
model is a 3-shot CLAD model whose region threshold is set by hand (1.5, the blot's
and the streak's maps peak near 2.7, normal parts below 0.2): this test is about the
words, not the calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from pipeline.frames import make_envelope
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.region_cache import RedisRegionCache, description_key, region_fingerprint
from pipeline.settings import (
    AlarmSettings,
    DatabaseSettings,
    LineContextSettings,
    ModelSettings,
    RedisSettings,
    Settings,
    WorkerSettings,
)
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import ModelVersion, Region, Verdict
from pipeline.storage.repository import (
    activate_model_version,
    active_model_version,
    register_model_version,
)
from pipeline.storage.tokens import create_token
from tests.integration.pipeline_support import REPO, kafka_settings, wait_until
from workers.api import create_app
from workers.retraining.data import is_held_out
from workers.retraining.describer_step import _SALT
from workers.streaming.runner import build_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCT, SIZE = "tile", 128
KINDS = {"streak": "a bright streak", "blot": "a dark blot"}  # drawing -> operator's words
LEARNED = {"streak": "bright_streak", "blot": "dark_blot"}  # drawing -> kind key


def part(seed: int, kind: str | None = None) -> np.ndarray:
    """A striped grey part (RGB); a bright streak or a dark blot where `kind` says."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 120, np.uint8)
    for x in range(0, SIZE, 8):
        img[:, x:x + 2] = 95
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if kind == "streak":
        x0, y0 = (int(v) for v in rng.integers(15, 50, 2))
        angle = rng.uniform(0, np.pi)
        x1 = min(int(x0 + 55 * np.cos(angle) + 30), 115)
        y1 = min(int(y0 + 55 * abs(np.sin(angle)) + 20), 115)
        cv2.line(img, (x0, y0), (x1, y1), (235, 235, 235), 3)
    elif kind == "blot":
        cx, cy = (int(v) for v in rng.integers(30, 98, 2))
        cv2.circle(img, (cx, cy), int(rng.integers(8, 12)), (35, 35, 35), -1)
    return img


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def _frame_ids(kind: str, held: int, train: int) -> list[uuid.UUID]:
    """Stable ids, `held` of them on the describer's held-out side and `train` not."""
    want = {True: held, False: train}
    out = []
    for i in range(1000):
        fid = uuid.uuid5(uuid.NAMESPACE_URL, f"learning/{kind}/{i}")
        side = is_held_out(fid, 0.3, salt=_SALT)
        if want[side]:
            want[side] -= 1
            out.append(fid)
        if not any(want.values()):
            return out
    raise AssertionError("not enough ids")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learning-models")
    config = ScoringConfig(input_size=SIZE, aug_shifts=(), aug_rotations=())
    runtime = build_runtime([part(i) for i in range(3)], config)
    threshold = Threshold(1.0, "false_alarm_rate", n_normal=3, n_anomalous=0, pixel=1.5)
    save_model(runtime, out, ModelMetadata(PRODUCT, config, threshold, version="v1-3shot"))
    return out


@pytest.fixture
def settings(kafka_bootstrap: str, postgres_url: str, redis_url: str, model_dir: Path,
             tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka=kafka_settings(kafka_bootstrap, tag),
        database=DatabaseSettings(database_url=postgres_url),
        redis=RedisSettings(redis_url=redis_url),
        model=ModelSettings(model_dir=model_dir, backend="torch"),
        worker=WorkerSettings(metrics_port=0, model_check_interval_s=0.5, batch_size=8),
        context=LineContextSettings(line_context=False),
        alarms=AlarmSettings(alarm_interval_s=0))


@pytest.fixture
def worker(settings: Settings, clean_db: Engine, redis_client: redis.Redis) -> Iterator[None]:
    with transaction(make_session_factory(clean_db)) as session:
        path = settings.model.model_dir / PRODUCT / "v1-3shot"
        register_model_version(session, version="v1-3shot", product=PRODUCT, path=str(path),
                               threshold=1.0, metrics={})
        activate_model_version(session, "v1-3shot")
    ensure_topics(settings.kafka)
    stop = threading.Event()
    thread = threading.Thread(target=build_worker(settings, stop=stop).run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def _publish(settings: Settings, frames: list[tuple[uuid.UUID, np.ndarray]]) -> None:
    with FramePublisher(settings.kafka) as publisher:
        for fid, img in frames:
            publisher.publish(make_envelope(_png(img), camera_id="cam-1", line_id="line-1",
                                            product=PRODUCT, frame_id=fid))


def _scored(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, Verdict]:
    factory = make_session_factory(engine)
    with factory() as session:
        rows = session.scalars(select(Verdict).where(Verdict.frame_id.in_(ids))).all()
        for v in rows:
            list(v.regions)  # loaded while the session is open
        return {v.frame_id: v for v in rows}


def _wait(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, Verdict]:
    wait_until(lambda: len(_scored(engine, ids)) == len(ids), timeout_s=120,
               what=f"{len(ids)} verdicts")
    return _scored(engine, ids)


def _label(api: TestClient, token: str, verdicts: dict[uuid.UUID, Verdict],
           kind_of: dict[uuid.UUID, str]) -> int:
    """Name every region of each verdict as its frame's drawing, through the API."""
    n = 0
    for fid, verdict in verdicts.items():
        for region in verdict.regions:
            r = api.post(f"/api/v1/verdicts/{verdict.id}/labels",
                         headers={"Authorization": f"Bearer {token}"},
                         json={"label": "description", "region_id": region.id,
                               "description": KINDS[kind_of[fid]]})
            assert r.status_code == 201, r.text
            n += 1
    return n


def _retrain(settings: Settings) -> dict:
    """`clad retrain --json` in its own process, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAD_")}
    env.update(CLAD_DATABASE_URL=settings.database.database_url,
               CLAD_MODEL_DIR=str(settings.model.model_dir), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "workers.cli.main", "retrain", "--product",
                          PRODUCT, "--json"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)["results"][0]


def test_operators_teach_the_describer_and_a_worse_one_is_kept_out(
        settings: Settings, worker: None, clean_db: Engine, redis_client: redis.Redis) -> None:
    # 1. the stream: 6 parts of each drawing, 2 of them on the describer's held-out side
    kind_of: dict[uuid.UUID, str] = {}
    first = []
    for k, kind in enumerate(KINDS):
        for i, fid in enumerate(_frame_ids(kind, held=2, train=4)):
            kind_of[fid] = kind
            first.append((fid, part(100 + 10 * k + i, kind)))
    _publish(settings, first)
    scored = _wait(clean_db, [f for f, _ in first])
    assert all(v.label == "anomalous" and v.regions for v in scored.values())
    before = [r.kind for v in scored.values() for r in v.regions]
    assert not set(before) & set(LEARNED.values()), "nobody has named these kinds yet"

    # 2. an operator names every region through the HTTP API
    with transaction(make_session_factory(clean_db)) as session:
        _row, ann = create_token(session, name="ann", role="operator",
                                 expires_in=timedelta(hours=1))
        _row, sab = create_token(session, name="saboteur", role="operator",
                                 expires_in=timedelta(hours=1))
    with TestClient(create_app(settings, clean_db)) as api:
        named = _label(api, ann, scored, kind_of)

    # 3. `clad retrain` trains the describer and promotes it into a new model version
    result = _retrain(settings)
    d = result["describer"]
    print(f"describer: {d}")
    assert d["status"] == "promoted", d["reason"]
    assert sum(d["regions_per_kind"].values()) == named
    assert set(d["regions_per_kind"]) == set(LEARNED.values())
    assert d["held_out_regions"] > 0 and d["train_regions"] > 0
    assert d["challenger_accuracy"] >= d["champion_accuracy"]
    assert d["challenger_accuracy"] >= 0.75
    factory = make_session_factory(clean_db)
    with factory() as session:
        active = active_model_version(session, PRODUCT)
        assert active is not None and active.version == d["version"]
        assert active.metrics["parent"] == "v1-3shot"
    learned_version = active.version
    assert (Path(active.path) / "describer.pt").is_file()

    # 4. the worker reloads between batches; later frames carry the learned kinds
    probes: list[uuid.UUID] = []

    def reloaded() -> bool:
        """A probe part per poll, until one is scored by the new version."""
        scored_by = {v.model_version for v in _scored(clean_db, probes).values()}
        probes.append(uuid.uuid4())
        _publish(settings, [(probes[-1], part(900, "blot"))])
        return learned_version in scored_by

    wait_until(reloaded, timeout_s=60, what="the worker to load the learned describer")
    later = [(uuid.uuid4(), part(500 + i, kind)) for i, kind in enumerate(list(KINDS) * 4)]
    kinds_later = {fid: kind for (fid, _), kind in zip(later, list(KINDS) * 4, strict=True)}
    _publish(settings, later)
    verdicts = _wait(clean_db, [f for f, _ in later])
    regions = [(fid, r) for fid, v in verdicts.items() for r in v.regions]
    assert regions and {v.model_version for v in verdicts.values()} == {learned_version}
    right = sum(r.kind == LEARNED[kinds_later[fid]] for fid, r in regions)
    print(f"later frames: {right}/{len(regions)} regions carry their drawing's kind")
    assert right / len(regions) >= 0.75
    assert all(r.description in {"a bright streak", "a dark blot"} for _f, r in regions)
    identity = {r.describer for _f, r in regions}
    assert len(identity) == 1
    cache = RedisRegionCache(redis_client, ttl_s=60)
    owner = description_key(learned_version, identity.pop())
    keys = {region_fingerprint(owner, np.frombuffer(r.embedding, np.float32)): r.kind
            for _f, r in regions}
    cached = cache.get_descriptions(list(keys))
    assert set(cached) == set(keys), "every later region is cached under the new key"
    assert all(cached[k]["kind"] == kind for k, kind in keys.items())

    # 5. the same labels again: nothing new to learn, no new version
    again = _retrain(settings)["describer"]
    assert again["status"] == "skipped" and "nothing new" in again["reason"], again

    # 6. a saboteur swaps the words of the training frames: that challenger is worse on
    # the held-out regions (their words unchanged) and is not promoted
    swap = {"streak": "blot", "blot": "streak"}
    train_frames = {f: v for f, v in scored.items() if not is_held_out(f, 0.3, salt=_SALT)}
    with TestClient(create_app(settings, clean_db)) as api:
        _label(api, sab, train_frames, {f: swap[kind_of[f]] for f in train_frames})
    worse = _retrain(settings)["describer"]
    print(f"sabotaged: {worse}")
    assert worse["status"] == "kept", worse["reason"]
    assert worse["challenger_accuracy"] < worse["champion_accuracy"]
    assert "worse" in worse["reason"]
    with factory() as session:
        assert active_model_version(session, PRODUCT).version == learned_version
        assert len(session.scalars(select(ModelVersion)).all()) == 2
        stored = session.scalars(select(Region).where(Region.kind == "dark_blot")).all()
        assert stored, "the learned kinds are in Postgres"
