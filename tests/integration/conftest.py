"""Fixtures shared by the operator API and history tests: one seeded store per module."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from pipeline.settings import AlarmSettings, Settings
from tests.integration.operator_data import T0, Seeded, seed, truncate
from workers.api import create_app


@pytest.fixture(scope="module")
def seeded(pg_engine: Engine) -> Iterator[Seeded]:
    data = seed(pg_engine)
    yield data
    truncate(pg_engine)


def make_client(settings: Settings, pg_engine: Engine) -> Iterator[TestClient]:
    """The API on the seeded store, its clock 4 h after the seed's start."""
    with TestClient(create_app(settings, pg_engine, clock=lambda: T0 + timedelta(hours=4))) as c:
        yield c


@pytest.fixture(scope="module")
def client(pg_engine: Engine, seeded: Seeded) -> Iterator[TestClient]:
    # No alarm timer: tests that want an evaluation call app.state.alarms.run_once().
    yield from make_client(Settings(alarms=AlarmSettings(alarm_interval_s=0)), pg_engine)
