"""The review queue (viewer and up; labelling it uses the operator label route)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from pipeline.storage.review import review_queue
from workers.api.auth import SessionDep, require
from workers.api.routes_history import summaries
from workers.api.schemas import ReviewItemOut, ReviewQueueOut, ReviewRegionOut

router = APIRouter(prefix="/api/v1", tags=["review"], dependencies=[Depends(require("viewer"))])


def load_review(request: Request, session: Session, limit: int) -> ReviewQueueOut:
    cfg = request.app.state.settings.review
    until = request.app.state.clock()
    since = until - timedelta(hours=cfg.review_window_hours)
    queue = review_queue(session, since=since, until=until, fraction=cfg.review_band_fraction,
                         unclear_prefix=cfg.review_unclear_prefix, limit=limit)
    prefix = cfg.review_unclear_prefix.lower()
    items = []
    for verdict, summary in zip(queue.items, summaries(session, queue.items), strict=True):
        unclear = any((r.description or "").lower().startswith(prefix) for r in verdict.regions)
        items.append(ReviewItemOut(
            **summary.model_dump(), reason="unclear" if unclear else "near_threshold",
            regions=[ReviewRegionOut(id=r.id, index=r.index, description=r.description,
                                     confidence=r.confidence) for r in verdict.regions]))
    return ReviewQueueOut(waiting=queue.waiting, fraction=cfg.review_band_fraction,
                          bands=queue.bands, since=since, until=until, items=items)


@router.get("/review-queue", response_model=ReviewQueueOut,
            summary="Unlabelled verdicts near the threshold or with unclear regions")
def get_review_queue(request: Request, session: SessionDep,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReviewQueueOut:
    return load_review(request, session, limit)
