"""The review queue: the verdicts a label would teach most, bounded for a shift's work.

Per product and per hour (UTC) of the review window, two lanes are queued:
- the `per_hour` verdicts closest to their threshold (|score / threshold - 1|), and
- the `per_hour` closest of those with a region no kind was sure of (kind "unclear";
  regions stored before kinds: a description starting with the unclear prefix).
The ranks are taken over every verdict of the hour, labelled or not, and a verdict
leaves the queue once it has any label: labelling never pulls other verdicts in, so
the queue drains, and its size is bounded by 2 x per_hour x products x hours however
many frames the line inspects. Newest first, paged by keyset like the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, text
from sqlalchemy.orm import Session, selectinload

from pipeline.storage.history import Cursor, after_cursor
from pipeline.storage.models import OperatorLabel, Region, Verdict
from pipeline.storage.trends import bucket_expression

UNCLEAR_KIND = "unclear"  # engine.defects.defect_kinds.UNCLEAR (storage never imports it)


@dataclass(frozen=True)
class ReviewQueue:
    waiting: int  # every verdict in the queue, not only this page
    items: list[Verdict]  # newest first, regions loaded
    next_cursor: Cursor | None


def distance_to_threshold() -> ColumnElement[float]:
    """|score / threshold - 1|: how unsure the model was, on every product's scale."""
    return case((Verdict.threshold > 0,
                 func.abs(Verdict.score - Verdict.threshold) / Verdict.threshold),
                else_=func.abs(Verdict.score - Verdict.threshold))


def unclear_region(unclear_prefix: str) -> ColumnElement[bool]:
    """The verdict has a region no kind was sure of."""
    old_style = and_(Region.kind.is_(None),
                     func.lower(Region.description).startswith(unclear_prefix.lower(),
                                                               autoescape=True))
    return select(Region.id).where(Region.verdict_id == Verdict.id,
                                   or_(Region.kind == UNCLEAR_KIND, old_style)).exists()


def queued_ids(session: Session, *, since: datetime, until: datetime, per_hour: int,
               unclear_prefix: str) -> Select:
    """The ids of the verdicts in the two lanes (labelled ones included)."""
    hour = bucket_expression(session, "hour")
    unclear = case((unclear_region(unclear_prefix), 1), else_=0)
    scored = (select(Verdict.id.label("id"), Verdict.product.label("product"),
                     hour.label("hour"), unclear.label("unclear"),
                     distance_to_threshold().label("distance"))
              .where(Verdict.captured_at >= since, Verdict.captured_at < until).subquery())
    near = func.row_number().over(partition_by=(scored.c.product, scored.c.hour),
                                  order_by=(scored.c.distance, scored.c.id))
    lane = func.row_number().over(
        partition_by=(scored.c.product, scored.c.hour, scored.c.unclear),
        order_by=(scored.c.distance, scored.c.id))
    ranked = select(scored.c.id, scored.c.unclear, near.label("near"),
                    lane.label("lane")).subquery()
    return select(ranked.c.id).where(or_(ranked.c.near <= per_hour,
                                         and_(ranked.c.unclear == 1,
                                              ranked.c.lane <= per_hour)))


def review_queue(session: Session, *, since: datetime, until: datetime, per_hour: int,
                 unclear_prefix: str, limit: int = 50,
                 after: Cursor | None = None) -> ReviewQueue:
    """How many verdicts wait for review, and one page of them, newest first."""
    if session.get_bind().dialect.name == "postgresql":
        # The window functions make the planner guess a cost above jit_above_cost, and
        # compiling costs more than the query (bench/history.py). SET LOCAL: this
        # transaction only.
        session.execute(text("SET LOCAL jit = off"))
    labelled = select(OperatorLabel.id).where(OperatorLabel.verdict_id == Verdict.id).exists()
    where = [Verdict.id.in_(queued_ids(session, since=since, until=until, per_hour=per_hour,
                                       unclear_prefix=unclear_prefix)), ~labelled]
    waiting = session.scalar(select(func.count()).select_from(Verdict).where(*where)) or 0
    stmt = (select(Verdict).where(*where, *after_cursor(after))
            .options(selectinload(Verdict.regions))
            .order_by(Verdict.captured_at.desc(), Verdict.id.desc()).limit(limit + 1))
    rows = list(session.scalars(stmt))
    if len(rows) <= limit:
        return ReviewQueue(int(waiting), rows, None)
    last = rows[limit - 1]
    return ReviewQueue(int(waiting), rows[:limit], Cursor(last.captured_at, last.id))
