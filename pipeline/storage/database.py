"""Engine and session factory. Created from settings in main(), never at import."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 5, connect_timeout_s: int = 5) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,  # a connection cut by a DB restart is replaced, not reused
        connect_args={"connect_timeout": connect_timeout_s},
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API types
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def wait_for_database(engine: Engine, *, timeout_s: float = 60.0, interval_s: float = 1.0) -> None:
    """Block until the database answers, or raise after timeout_s with the last error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"database {engine.url.render_as_string(hide_password=True)} "
                    f"did not answer within {timeout_s:.0f} s: {exc.orig}"
                ) from exc
            log.warning("database not reachable yet (%s); retrying", exc.orig)
            time.sleep(interval_s)
