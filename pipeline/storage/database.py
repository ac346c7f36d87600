"""Engine and session factory. Created from settings in main(), never at import."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.settings import DatabaseSettings
from pipeline.storage.connection_watchdog import ConnectionWatchdog

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 5, connect_timeout_s: int = 5,
                limits: ConnectionLimits | None = None) -> Engine:
    """`limits` (PostgreSQL only) bound every wait on the database: server-side statement
    and idle-in-transaction timeouts, TCP keepalives and user timeout, and a client-side
    deadline on each checkout (ConnectionWatchdog) for a server that stops answering."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, object] = {"connect_timeout": connect_timeout_s}
    if limits is not None:
        connect_args.update(limits.libpq_parameters())
    watchdog = (ConnectionWatchdog(limits.checkout_timeout_s)
                if limits is not None and limits.checkout_timeout_s else None)
    engine = create_engine(
        url,
        pool_size=pool_size,
        # A connection cut by a DB restart is replaced, not reused. The watchdog pings
        # on checkout itself, under its deadline: the pool's own ping would run unarmed.
        pool_pre_ping=watchdog is None,
        connect_args=connect_args,
    )
    if watchdog is not None:
        watchdog.attach(engine)
    return engine


@dataclass(frozen=True)
class ConnectionLimits:
    """How long any one wait on PostgreSQL may last (seconds; 0 = no limit)."""

    statement_timeout_s: float = 30.0
    idle_in_transaction_timeout_s: float = 60.0
    # A connection checked out longer than this is cut, and so are its siblings.
    checkout_timeout_s: float = 30.0
    tcp_user_timeout_s: float = 20.0
    keepalive_idle_s: int = 10
    keepalive_interval_s: int = 5
    keepalive_count: int = 3

    def libpq_parameters(self) -> dict[str, object]:
        options = []
        if self.statement_timeout_s:
            options.append(f"-c statement_timeout={int(self.statement_timeout_s * 1000)}")
        if self.idle_in_transaction_timeout_s:
            options.append("-c idle_in_transaction_session_timeout="
                           f"{int(self.idle_in_transaction_timeout_s * 1000)}")
        params: dict[str, object] = {
            "keepalives": 1, "keepalives_idle": self.keepalive_idle_s,
            "keepalives_interval": self.keepalive_interval_s,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": int(self.tcp_user_timeout_s * 1000),
        }
        if options:
            params["options"] = " ".join(options)
        return params


def engine_from_settings(db: DatabaseSettings) -> Engine:
    """The engine of a long-running process (worker, API): every wait bounded."""
    return make_engine(db.database_url, pool_size=db.db_pool_size,
                       connect_timeout_s=db.db_connect_timeout_s, limits=ConnectionLimits(
                           statement_timeout_s=db.db_statement_timeout_s,
                           idle_in_transaction_timeout_s=db.db_idle_in_transaction_timeout_s,
                           checkout_timeout_s=db.db_checkout_timeout_s,
                           tcp_user_timeout_s=db.db_tcp_user_timeout_s))


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
