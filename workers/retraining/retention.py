"""Disk retention of model versions (`clad model prune`, and after every retrain run).

Removed: the directories of rejected versions beyond the newest `keep_rejected` of each
product (their rows and figures stay, marked pruned), and entries of models/.work (feature
caches, checkpoints of interrupted runs, staged versions) untouched for `work_max_age_s`.
Never removed: the active version, the previous active one, candidates, retired versions,
or anything the database does not name (a `clad train` output waiting to be registered).
Checkpoints are kept for a while on purpose: an interrupted run resumes from them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.storage.database import transaction
from pipeline.storage.models import ModelVersion

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    removed_versions: list[str] = field(default_factory=list)
    removed_work: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # version -> why it stays


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))]
    return max(times)


def protected_versions(rows: list[ModelVersion]) -> dict[str, str]:
    """version -> why it must stay: the active one of each product and the previous active
    (the most recently promoted of those it replaced)."""
    kept: dict[str, str] = {}
    by_product: dict[str, list[ModelVersion]] = {}
    for row in rows:
        by_product.setdefault(row.product, []).append(row)
    for product_rows in by_product.values():
        for row in product_rows:
            if row.status == "active":
                kept[row.version] = "active"
        retired = [r for r in product_rows if r.status == "retired" and r.promoted_at]
        if retired:
            previous = max(retired, key=lambda r: r.promoted_at)
            kept[previous.version] = "previous active"
    return kept


def prune(factory: sessionmaker[Session], model_dir: Path, *, keep_rejected: int = 0,
          work_max_age_s: float = 7 * 86_400.0, product: str | None = None,
          dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Apply the retention rules (see the module doc); with dry_run, only report."""
    report = PruneReport()
    now = time.time() if now is None else now
    with factory() as session:
        stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        rows = list(session.scalars(stmt))
    report.kept = protected_versions(rows)
    protected_paths = {Path(r.path).resolve() for r in rows if r.version in report.kept}
    rejected_seen: dict[str, int] = {}
    doomed: list[ModelVersion] = []
    for row in rows:
        if row.status != "rejected" or (product and row.product != product):
            continue
        rejected_seen[row.product] = rejected_seen.get(row.product, 0) + 1
        if rejected_seen[row.product] <= keep_rejected or (row.metrics or {}).get("pruned_at"):
            continue
        doomed.append(row)
    for row in doomed:
        path = Path(row.path)
        if path.resolve() in protected_paths:
            report.kept[row.version] = "shares its directory with a protected version"
            continue
        if path.is_dir():
            report.freed_bytes += _size(path)
            if not dry_run:
                shutil.rmtree(path)
        report.removed_versions.append(row.version)
    if doomed and not dry_run:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with transaction(factory) as session:
            for version in report.removed_versions:
                row = session.scalars(select(ModelVersion).where(
                    ModelVersion.version == version)).one()
                row.metrics = {**(row.metrics or {}), "pruned_at": stamp}
    work = model_dir / ".work"
    scopes = [work / product] if product else ([work] if work.is_dir() else [])
    for scope in scopes:
        if not scope.is_dir():
            continue
        # .work/<product>/<entry>: each entry (cache, checkpoint dir, staged version) alone
        entries = [e for d in scope.iterdir() for e in (d.iterdir() if d.is_dir() else [d])] \
            if scope == work else list(scope.iterdir())
        for entry in entries:
            if now - _newest_mtime(entry) < work_max_age_s:
                continue
            report.freed_bytes += _size(entry)
            report.removed_work.append(str(entry.relative_to(model_dir)))
            if not dry_run:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    log.info("prune%s: %d versions, %d work entries, %.1f MB%s", " (dry run)" if dry_run else "",
             len(report.removed_versions), len(report.removed_work), report.freed_bytes / 1e6,
             "" if dry_run else " freed")
    return report
