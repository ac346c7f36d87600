"""Hot model reload: between batches, follow each product's active model version (DB row)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from workers.streaming.active_models import EngineLoader, active_versions
from workers.streaming.scoring import ScoringEngine

log = logging.getLogger(__name__)


class ModelWatcher:
    """Called by the worker after each batch; checks at most every interval_s.

    The new engine is built before the swap, and the swap replaces the worker's
    whole engine mapping, so a batch never sees two versions of one product and
    no frame waits for a half-loaded model. A version that fails to load is
    logged and skipped until the DB names another one. A product activated after
    the worker started is served from the next check on.
    """

    def __init__(self, factory: sessionmaker[Session], loader: EngineLoader, *,
                 interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.factory, self.loader, self.interval_s, self.clock = factory, loader, interval_s, clock
        self._next_check = 0.0
        self._failed: set[str] = set()

    def __call__(self, worker: object) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.interval_s
        engines: dict[str, ScoringEngine] = worker.engines  # type: ignore[attr-defined]
        try:
            with self.factory() as session:
                wanted = {p: (a.version, a.path) for p, a in active_versions(session).items()}
        except SQLAlchemyError as exc:
            log.warning("model version check skipped, database unavailable: %s", exc)
            return
        swapped = dict(engines)
        for product, (version, path) in wanted.items():
            current = engines[product].version if product in engines else None
            if version == current or version in self._failed:
                continue
            try:
                swapped[product] = self.loader(path, product)
            except Exception:  # noqa: BLE001 - a bad artefact must not stop scoring
                log.exception("cannot load model %s for %s from %s; keeping %s", version,
                              product, path, current)
                self._failed.add(version)
                continue
            log.info("product %s: model %s -> %s", product, current,
                     swapped[product].version)
            metrics = getattr(worker, "metrics", None)
            if metrics is not None:
                metrics.model_reloads.labels(product).inc()
        if swapped != engines:
            worker.engines = swapped  # type: ignore[attr-defined]
