import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from pipeline.storage.database import make_engine
from pipeline.storage.migrate import current_revision, downgrade, head_revision, upgrade
from pipeline.storage.models import Base
from pipeline.storage.tokens import hash_token, verify_token
from tests.conftest import _admin_engine

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def _schema_diff(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_postgres_migrated_schema_equals_models(pg_engine: Engine) -> None:
    assert current_revision(pg_engine) == head_revision(pg_engine)
    assert _schema_diff(pg_engine) == []


def test_sqlite_migrated_schema_equals_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    upgrade(engine)
    assert _schema_diff(engine) == []
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'clad.db'}")
    upgrade(engine)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(engine)
    assert _schema_diff(engine) == []


@pytest.fixture
def empty_postgres_url() -> str:
    admin = _admin_engine()
    name = f"clad_cli_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_cli_db_upgrade_creates_schema_then_is_a_no_op(empty_postgres_url: str,
                                                       tmp_path: Path) -> None:
    # PYTHONPATH: the checkout under test runs, not whichever copy is installed in the venv.
    env = {"CLAD_DATABASE_URL": empty_postgres_url, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "workers.cli.main", "db", "upgrade"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                           check=False)
    assert first.returncode == 0, first.stderr
    assert "upgraded empty ->" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                            check=False)
    assert second.returncode == 0, second.stderr
    assert "already at" in second.stdout
    engine = make_engine(empty_postgres_url)
    assert _schema_diff(engine) == []
    engine.dispose()


def test_tokens_issued_before_expiry_existed_get_the_default_lifetime(
        empty_postgres_url: str) -> None:
    engine = make_engine(empty_postgres_url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO api_tokens (name, token_hash, role, created_at) "
                "VALUES ('old', :hash, 'admin', now() - interval '400 days')"),
                {"hash": hash_token("an-old-secret")})
        start = datetime.now(UTC)
        upgrade(engine)
        end = datetime.now(UTC)
        with engine.connect() as connection:
            expires = connection.execute(text("SELECT expires_at FROM api_tokens")).scalar_one()
        assert start + timedelta(days=90) <= expires <= end + timedelta(days=90)
        with Session(engine) as session:
            assert verify_token(session, "an-old-secret") is not None
            assert verify_token(session, "an-old-secret", now=end + timedelta(days=91)) is None
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()
