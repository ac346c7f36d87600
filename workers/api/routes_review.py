"""The review queue (viewer and up; labelling it uses the operator label routes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from pipeline.storage.history import Cursor
from pipeline.storage.labels import count_open_conflicts, open_conflicts
from pipeline.storage.region_groups import Pool, load_pool
from pipeline.storage.review import UNCLEAR_KIND, review_queue
from workers.api.auth import SessionDep, require
from workers.api.kinds import confirmable
from workers.api.params import CursorDep, encode_cursor
from workers.api.routes_history import summaries
from workers.api.schemas import (
    LabelConflictOut,
    LabelConflictsOut,
    ReviewItemOut,
    ReviewQueueOut,
    ReviewRegionOut,
)
from workers.api.values import Text

router = APIRouter(prefix="/api/v1", tags=["review"], dependencies=[Depends(require("viewer"))])


def load_review(request: Request, session: Session, limit: int,
                after: Cursor | None = None) -> ReviewQueueOut:
    cfg = request.app.state.settings.review
    until = request.app.state.clock()
    since = until - timedelta(hours=cfg.review_window_hours)
    queue = review_queue(session, since=since, until=until, per_hour=cfg.review_per_hour,
                         unclear_prefix=cfg.review_unclear_prefix, limit=limit, after=after)
    prefix = cfg.review_unclear_prefix.lower()
    pools: dict[tuple[str, str], Pool] = {}
    items = []
    for verdict, summary in zip(queue.items, summaries(session, queue.items), strict=True):
        unclear = any(r.kind == UNCLEAR_KIND or (
            r.kind is None and (r.description or "").lower().startswith(prefix))
            for r in verdict.regions)
        regions = []
        for r in verdict.regions:
            similar = 0
            if r.embedding is not None and r.describer:
                key = (verdict.product, r.describer)
                if key not in pools:
                    pools[key] = load_pool(session, product=verdict.product,
                                           describer=r.describer, since=since, until=until)
                similar = len(pools[key].similar(r.id, cfg.review_group_similarity))
            regions.append(ReviewRegionOut(
                id=r.id, index=r.index, description=r.description, confidence=r.confidence,
                kind=r.kind, confirmable=confirmable(r.kind, r.description), similar=similar))
        items.append(ReviewItemOut(**summary.model_dump(),
                                   reason="unclear" if unclear else "near_threshold",
                                   regions=regions))
    return ReviewQueueOut(waiting=queue.waiting, per_hour=cfg.review_per_hour, since=since,
                          until=until, items=items,
                          next_cursor=encode_cursor(queue.next_cursor))


@router.get("/review-queue", response_model=ReviewQueueOut,
            summary="Unlabelled verdicts a label would teach most, newest first")
def get_review_queue(request: Request, session: SessionDep, after: CursorDep,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReviewQueueOut:
    return load_review(request, session, limit, after)


def load_conflicts(session: Session, limit: int, product: str | None = None) -> LabelConflictsOut:
    """Label conflicts, apart from the per-product-hour queue: they are not about the
    model being unsure but about two people disagreeing."""
    items = [LabelConflictOut(id=c.id, verdict_id=v.id, product=v.product,
                              camera_id=v.camera_id, captured_at=v.captured_at, label=c.label,
                              author=c.author, previous_label=c.previous_label,
                              previous_author=c.previous_author, created_at=c.created_at)
             for c, v in open_conflicts(session, product=product, limit=limit)]
    return LabelConflictsOut(open=count_open_conflicts(session, product=product), items=items)


@router.get("/review-queue/conflicts", response_model=LabelConflictsOut,
            summary="Labels that overturned another author's label, newest first")
def get_label_conflicts(session: SessionDep,
                        product: Annotated[Text | None, Query(max_length=100)] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> LabelConflictsOut:
    return load_conflicts(session, limit, product)
