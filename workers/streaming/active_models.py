"""Which model version the worker serves: exactly the active row of each product in the
database, at start and on every reload check; never "the newest directory on disk".

A version directory on disk means nothing until the database names it active: a rejected
challenger, a candidate, or a directory saved by a run killed before it registered it is
never loaded. With the database unreachable at start the worker waits, as it does for
the broker and the cache, instead of guessing from the disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.storage.models import ModelVersion
from workers.streaming.scoring import ScoringEngine

log = logging.getLogger(__name__)

# (model path from the DB row, product) -> engine
EngineLoader = Callable[[str, str], ScoringEngine]


class NoActiveModelError(RuntimeError):
    """The database answers but names no active model for any product."""


@dataclass(frozen=True)
class ActiveVersion:
    product: str
    version: str
    path: str


def active_versions(session: Session) -> dict[str, ActiveVersion]:
    """The active version of every product (at most one per product: see
    pipeline.storage.repository.activate_model_version)."""
    rows = session.scalars(select(ModelVersion).where(ModelVersion.status == "active")
                           .order_by(ModelVersion.product)).all()
    return {r.product: ActiveVersion(r.product, r.version, r.path) for r in rows}


def wait_for_active_versions(factory: sessionmaker[Session], stop: threading.Event, *,
                             max_backoff_s: float = 10.0) -> dict[str, ActiveVersion] | None:
    """The active versions once the database answers; waits with backoff meanwhile.
    None when `stop` is set first."""
    delay, attempts = 0.5, 0
    while not stop.is_set():
        try:
            with factory() as session:
                found = active_versions(session)
            if attempts:
                log.info("database reachable after %d attempts", attempts + 1)
            return found
        except SQLAlchemyError as exc:
            attempts += 1
            if attempts == 1 or attempts % 10 == 0:
                log.warning("database unreachable, cannot tell which model version is "
                            "active; waiting (attempt %d): %s", attempts,
                            str(exc).splitlines()[0])
        stop.wait(delay)
        delay = min(delay * 2, max_backoff_s)
    return None


def load_active_engines(factory: sessionmaker[Session], loader: EngineLoader,
                        stop: threading.Event, *,
                        max_backoff_s: float = 10.0) -> dict[str, ScoringEngine] | None:
    """An engine for the active version of every product; None when stopped while waiting
    for the database. A product whose active version cannot be loaded is left out (logged;
    the reload check retries when another version becomes active); none at all is an error."""
    wanted = wait_for_active_versions(factory, stop, max_backoff_s=max_backoff_s)
    if wanted is None:
        return None
    if not wanted:
        raise NoActiveModelError(
            "the database names no active model version: register one with "
            "`clad model register DIR --activate`")
    engines: dict[str, ScoringEngine] = {}
    for product, active in wanted.items():
        try:
            engines[product] = loader(active.path, product)
        except Exception:  # noqa: BLE001 - one product's broken artefact must not stop others
            log.exception("cannot load the active model %s of %s from %s; that product is "
                          "not served until another version is activated", active.version,
                          product, active.path)
            continue
        if engines[product].version != active.version:
            log.warning("product %s: the active row names %s but %s holds version %s",
                        product, active.version, active.path, engines[product].version)
    if not engines:
        raise NoActiveModelError(f"no active model version could be loaded: {sorted(wanted)}")
    return engines
