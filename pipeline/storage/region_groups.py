"""Regions that look alike, so one operator label can name a whole group.

Alike means: the same product, embedded by the same describer (regions.describer:
embeddings of two describers live in different spaces), not yet named by an operator,
and a cosine similarity of their stored embeddings of at least a bound. A trained
describer's embeddings are unit-norm and compared as they are; the default describer's
are shape and photometry features on scales of their own (not unit-norm), so each
feature is z-scored over the pool first, or the largest-valued feature would decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pipeline.storage.models import Region, Verdict

POOL_LIMIT = 5000  # the newest regions compared; older ones wait for a later shift


@dataclass(frozen=True)
class Pool:
    """Unnamed regions of one product and describer, with comparable embeddings."""

    region_ids: np.ndarray  # [N] int64
    verdict_ids: np.ndarray  # [N] int64
    vectors: np.ndarray  # [N, D] float32, unit rows (after z-scoring where needed)

    def similar(self, region_id: int, min_similarity: float,
                limit: int = 100) -> list[tuple[int, int, float]]:
        """(region id, verdict id, cosine) of the regions alike `region_id`, most alike
        first, the region itself excluded; [] when it is not in the pool."""
        where = np.flatnonzero(self.region_ids == region_id)
        if where.size == 0:
            return []
        cosine = self.vectors @ self.vectors[where[0]]
        order = [i for i in np.argsort(-cosine, kind="stable")
                 if cosine[i] >= min_similarity and i != where[0]][:limit]
        return [(int(self.region_ids[i]), int(self.verdict_ids[i]), float(cosine[i]))
                for i in order]


def comparable(raw: np.ndarray) -> np.ndarray:
    """Unit rows for cosine: z-scored per feature first unless every row is unit-norm."""
    x = raw.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    if x.shape[0] and not np.allclose(norms, 1.0, atol=1e-3):
        x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def load_pool(session: Session, *, product: str, describer: str, since: datetime,
              until: datetime, include: int | None = None) -> Pool:
    """The product's regions of that describer in the window that no operator has named
    (and the region `include`, named or not: the one a group is sought for)."""
    rows = session.execute(
        select(Region.id, Region.verdict_id, Region.embedding)
        .join(Verdict, Verdict.id == Region.verdict_id)
        .where(Verdict.product == product, Region.describer == describer,
               Region.embedding.is_not(None),
               or_(Region.operator_description.is_(None), Region.id == include),
               Verdict.captured_at >= since, Verdict.captured_at < until)
        .order_by(Region.id.desc()).limit(POOL_LIMIT)).all()
    vectors = [np.frombuffer(e, np.float32) for _, _, e in rows]
    dims = {v.size for v in vectors}
    if len(dims) > 1:  # one describer, one dimension; anything else is skipped, not mixed
        common = max(dims, key=lambda d: sum(v.size == d for v in vectors))
        keep = [i for i, v in enumerate(vectors) if v.size == common]
        rows, vectors = [rows[i] for i in keep], [vectors[i] for i in keep]
    if not rows:
        return Pool(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    return Pool(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows],
                                                                   np.int64),
                comparable(np.stack(vectors)))
