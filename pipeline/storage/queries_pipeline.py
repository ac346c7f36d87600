"""Reads the demo and the pipeline benchmark need: verdicts of a known set of frames."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from pipeline.storage.models import Verdict

_CHUNK = 500  # keeps IN lists well under SQLite's bound-parameter limit


def verdict_counts(session: Session, frame_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many verdicts each of these frames has (absent = none)."""
    ids = list(frame_ids)
    counts: dict[uuid.UUID, int] = {}
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(Verdict.frame_id, func.count()).where(Verdict.frame_id.in_(ids[i:i + _CHUNK]))
            .group_by(Verdict.frame_id)).all()
        counts.update({frame_id: n for frame_id, n in rows})
    return counts


def verdicts_for(session: Session, frame_ids: Collection[uuid.UUID]) -> list[Verdict]:
    """Verdicts with heatmap and regions loaded, for the given frames."""
    ids = list(frame_ids)
    out: list[Verdict] = []
    for i in range(0, len(ids), _CHUNK):
        out.extend(session.scalars(
            select(Verdict).where(Verdict.frame_id.in_(ids[i:i + _CHUNK]))
            .options(selectinload(Verdict.regions), selectinload(Verdict.heatmap))))
    return out
