"""A worker serves exactly the active version of each product as the database names it:
not the newest directory on disk (a rejected challenger, an unregistered directory), and
not a guess while the database is down at start."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pipeline.frames import make_envelope
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.storage.database import make_engine, make_session_factory
from pipeline.storage.models import ModelVersion, Verdict
from pipeline.storage.repository import activate_model_version, register_model_version
from tests.integration.pipeline_support import (
    kafka_settings,
    png_frame,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_pipeline_reload import PRODUCT, _save_version
from workers.streaming.active_models import load_active_engines

pytestmark = [pytest.mark.integration]


def _register(engine: Engine, version: str, path: Path, *, status: str) -> None:
    with Session(engine) as session, session.begin():
        row = register_model_version(session, version=version, product=PRODUCT, path=str(path),
                                     threshold=1.0, metrics={})
        if status == "active":
            activate_model_version(session, version)
        else:
            row.status = status


def _versions_on_disk(model_dir: Path, clean_db: Engine) -> None:
    """A (active, oldest), B (a rejected challenger, newer), C (saved but never registered,
    newest): the newest directory on disk is the wrong answer twice over."""
    _register(clean_db, "A", _save_version(model_dir, "A", 1.5), status="active")
    _register(clean_db, "B", _save_version(model_dir, "B", 1.2), status="rejected")
    _save_version(model_dir, "C", 1.1)


def _version_loader(path: str, product: str) -> object:
    from engine.scoring.artifacts import load_model

    return type("Loaded", (), {"version": load_model(path).version, "product": product})()


def test_worker_restarted_after_a_rejection_serves_the_active_version(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    _versions_on_disk(model_dir, clean_db)
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    env = worker_env(kafka, postgres_url, redis_url, CLAD_MODEL_DIR=str(model_dir),
                     CLAD_BATCH_SIZE="4", CLAD_BACKEND="torch")
    del env["CLAD_ENGINE_FACTORY"]  # the real model directories, as in production
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    ensure_topics(kafka)
    ids = []
    with FramePublisher(kafka) as publisher:
        for i in range(4):
            envelope = make_envelope(png_frame(i), camera_id="cam-0", line_id="line-1",
                                     product=PRODUCT)
            publisher.publish(envelope)
            ids.append(envelope.header.frame_id)

    def scored() -> dict[uuid.UUID, str]:
        with clean_db.connect() as connection:
            return dict(connection.execute(select(Verdict.frame_id, Verdict.model_version)
                                           .where(Verdict.frame_id.in_(ids))).all())

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: len(scored()) == 4, timeout_s=180, what="4 verdicts", alive=alive)
    finally:
        code = stop_worker(worker)
    assert set(scored().values()) == {"A"}
    log = log_path.read_text()
    assert "serving product widget with model A " in log
    assert "model B" not in log and "model C" not in log
    assert code == 0


def test_active_engines_follow_the_database_not_the_disk(clean_db: Engine,
                                                        tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    _versions_on_disk(model_dir, clean_db)
    factory = make_session_factory(clean_db)
    engines = load_active_engines(factory, _version_loader, threading.Event())
    assert {p: e.version for p, e in engines.items()} == {PRODUCT: "A"}
    with Session(clean_db) as session:
        statuses = dict(session.execute(select(ModelVersion.version, ModelVersion.status)).all())
    assert statuses == {"A": "active", "B": "rejected"}  # C was never registered


def test_with_the_database_down_at_start_the_worker_waits_then_loads_the_active_version(
        postgres_url: str, clean_db: Engine, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    model_dir = tmp_path / "models"
    _versions_on_disk(model_dir, clean_db)
    url = make_engine(postgres_url).url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxy.cut()
    engine = make_engine(url.set(host="127.0.0.1", port=proxy.port)
                         .render_as_string(hide_password=False), connect_timeout_s=2)
    factory = make_session_factory(engine)
    result: dict[str, object] = {}
    stop = threading.Event()

    def start() -> None:
        result["engines"] = load_active_engines(factory, _version_loader, stop, max_backoff_s=0.5)
    thread = threading.Thread(target=start)
    try:
        with caplog.at_level("WARNING", logger="workers.streaming.active_models"):
            thread.start()
            wait_until(lambda: "database unreachable" in caplog.text, timeout_s=60,
                       what="the worker to say it waits for the database")
            assert "engines" not in result  # waiting, not guessing from the disk
            proxy.restore()
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert {p: e.version for p, e in result["engines"].items()} == {PRODUCT: "A"}
    finally:
        stop.set()
        thread.join(timeout=30)
        proxy.close()
        engine.dispose()


def test_stopped_while_the_database_is_down_nothing_is_loaded(tmp_path: Path) -> None:
    engine = make_engine("postgresql+psycopg://clad:clad@127.0.0.1:1/none", connect_timeout_s=1)
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        assert load_active_engines(make_session_factory(engine), _version_loader, stop,
                                   max_backoff_s=0.2) is None
    finally:
        timer.cancel()
        engine.dispose()
