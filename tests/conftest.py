"""Shared fixtures: real Postgres, Redis and a Kafka-protocol broker.

A service that is down fails the tests that need it with a message saying how
to start it; nothing is skipped silently. Unit tests use none of these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pipeline.broker import EmbeddedBroker
from pipeline.broker import tansu_binary as _tansu_binary
from pipeline.storage.database import make_engine
from pipeline.storage.models import Base
from tests.databases import POSTGRES_ADMIN_URL, fresh_database

# CLAD_TEST_REDIS_URL lets test runs of two checkouts on one machine use their own db.
REDIS_TEST_URL = os.environ.get("CLAD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = ("redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
               "--appendonly no")


def _admin_engine() -> Engine:
    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc.orig}). "
                    f"Start it with: {START_POSTGRES}", pytrace=False)
    return engine


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database with the schema migrated by Alembic; dropped at the end."""
    _admin_engine().dispose()  # fails the session with the command that starts Postgres
    with fresh_database(POSTGRES_ADMIN_URL) as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(pg_engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    with pg_engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def clean_db(pg_engine: Engine) -> Iterator[Engine]:
    """For tests whose processes commit on their own: every table emptied afterwards."""
    yield pg_engine
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with pg_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379 ({exc}). "
                    f"Start it with: {START_REDIS}", pytrace=False)
    finally:
        client.close()
    return REDIS_TEST_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """The test Redis db (15 unless CLAD_TEST_REDIS_URL), empty at the start and flushed
    at the end of each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def tansu_binary() -> Path:
    return _tansu_binary()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu, in memory) for the test session."""
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mvtec-sample").is_dir():
        pytest.fail(f"the shared inspection images are missing: expected {SHARED_DATA}",
                    pytrace=False)
    return SHARED_DATA
