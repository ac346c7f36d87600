"""One retraining run at a time: a Postgres advisory lock held on its own
connection, or an exclusive file lock beside the SQLite database."""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text


class RetrainLockedError(RuntimeError):
    """Another run holds the lock."""


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def retrain_lock(engine: Engine, *, name: str = "clad-retrain", wait_s: float = 0.0,
                 lock_dir: Path | None = None) -> Iterator[None]:
    """Hold the lock for the block; wait up to wait_s for it, then raise RetrainLockedError."""
    deadline = time.monotonic() + wait_s
    if engine.dialect.name == "postgresql":
        key = _lock_key(name)
        with engine.connect() as connection:
            while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                         {"k": key}).scalar():
                if time.monotonic() >= deadline:
                    raise RetrainLockedError(f"another retraining run holds the lock {name!r} "
                                        f"(Postgres advisory lock {key})")
                time.sleep(1.0)
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
        return
    database = engine.url.database or ""
    directory = lock_dir or (Path(database).resolve().parent if database else Path.cwd())
    path = directory / f".{name}.lock"
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RetrainLockedError(
                        f"another retraining run holds the lock {path}") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
