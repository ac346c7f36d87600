"""Defect history: filtered, keyset-paged verdict lists and the operators' aggregates.

Every query starts from `verdicts`, whose camera, line, product and time are
copied from the frame so that each filter lands on one (column, captured_at)
index. Pages are keyset (newest first on captured_at, id): page 10,000 costs
what page 1 costs, which OFFSET would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from pipeline.storage.models import OperatorLabel, Region, Verdict

MAX_PAGE = 500
GroupBy = Literal["hour", "camera", "line", "product"]
# What operators said about a verdict: nothing, anything, its latest decision (normal /
# anomalous), a corrected region description, or a decision against the model's.
OperatorFilter = Literal["none", "any", "normal", "anomalous", "described", "overruled"]


def shown_kind() -> ColumnElement[str]:
    """The kind a region shows everywhere: the operator's latest (their text when it
    named no kind), else the describer's kind key, else (regions stored before kinds)
    its description."""
    return func.coalesce(Region.operator_kind, Region.operator_description, Region.kind,
                         Region.description)


def shown_text() -> ColumnElement[str]:
    """The words a region shows: the operator's latest description, else the describer's."""
    return func.coalesce(Region.operator_description, Region.description)


@dataclass(frozen=True)
class HistoryFilter:
    """What an operator narrows the history to; None means no restriction."""

    line_id: str | None = None
    camera_id: str | None = None
    product: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    label: Literal["normal", "anomalous"] | None = None
    # a defect kind: matches the kind each region shows (shown_kind) or its exact words;
    # description_key is the same kind folded into a key ("a scratch" -> "scratch")
    description: str | None = None
    description_key: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    # score / threshold bounds (1.0 = the threshold), comparable across products
    min_relative: float | None = None
    max_relative: float | None = None
    operator: OperatorFilter | None = None

    def window(self, until_default: datetime, length: timedelta) -> HistoryFilter:
        """The same filter with a closed time window (aggregates need one)."""
        until = self.until or until_default
        since = self.since or until - length
        return HistoryFilter(**{**self.__dict__, "since": since, "until": until})


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: (captured_at, id) of that row."""

    captured_at: datetime
    id: int


@dataclass(frozen=True)
class Page:
    items: list[Verdict]
    next_cursor: Cursor | None


@dataclass(frozen=True)
class RateRow:
    key: str
    total: int
    anomalous: int

    @property
    def rate(self) -> float:
        return self.anomalous / self.total if self.total else 0.0


@dataclass(frozen=True)
class KindRow:
    description: str
    verdicts: int  # verdicts with at least one region of this kind
    regions: int
    rate: float  # verdicts / all verdicts matching the filter


@dataclass(frozen=True)
class KindTrend:
    description: str
    current: int
    previous: int

    @property
    def change(self) -> int:
        return self.current - self.previous


@dataclass(frozen=True)
class Trend:
    current: RateRow
    previous: RateRow
    kinds: list[KindTrend]

    @property
    def rate_change(self) -> float:
        return self.current.rate - self.previous.rate


def conditions(f: HistoryFilter, *, with_description: bool = True) -> list[ColumnElement[bool]]:
    """WHERE terms on verdicts for the filter."""
    terms: list[ColumnElement[bool]] = []
    for column, value in ((Verdict.line_id, f.line_id), (Verdict.camera_id, f.camera_id),
                          (Verdict.product, f.product), (Verdict.label, f.label)):
        if value is not None:
            terms.append(column == value)
    if f.since is not None:
        terms.append(Verdict.captured_at >= f.since)
    if f.until is not None:
        terms.append(Verdict.captured_at < f.until)
    if f.min_score is not None:
        terms.append(Verdict.score >= f.min_score)
    if f.max_score is not None:
        terms.append(Verdict.score <= f.max_score)
    if f.min_relative is not None:
        terms += [Verdict.threshold > 0, Verdict.score >= f.min_relative * Verdict.threshold]
    if f.max_relative is not None:
        terms += [Verdict.threshold > 0, Verdict.score <= f.max_relative * Verdict.threshold]
    if f.operator is not None:
        terms.append(_operator_term(f.operator))
    if with_description and f.description is not None:
        # EXISTS keeps one row per verdict however many regions share the kind.
        terms.append(select(Region.id).where(Region.verdict_id == Verdict.id,
                                             kind_matches(f)).exists())
    return terms


def kind_matches(f: HistoryFilter) -> ColumnElement[bool]:
    """Regions of the filter's kind: the kind they show, or their exact words."""
    assert f.description is not None
    keys = sorted({f.description, f.description_key or f.description})
    # shown_kind() IN keys OR shown_text() = description, spelled out column by column:
    # the planner can use each column's index and estimate how many rows match (on the
    # coalesce it guessed 1 % and chose a plan 25 times slower, bench/history.py).
    no_operator_kind = Region.operator_kind.is_(None)
    no_operator_text = Region.operator_description.is_(None)
    return or_(Region.operator_kind.in_(keys),
               and_(no_operator_kind, Region.operator_description.in_(keys)),
               and_(no_operator_kind, no_operator_text, Region.kind.in_(keys)),
               and_(no_operator_kind, no_operator_text, Region.kind.is_(None),
                    Region.description.in_(keys)),
               Region.operator_description == f.description,
               and_(no_operator_text, Region.description == f.description))


def _operator_term(which: OperatorFilter) -> ColumnElement[bool]:
    labelled = select(OperatorLabel.id).where(OperatorLabel.verdict_id == Verdict.id).exists()
    if which == "none":
        return ~labelled
    if which == "any":
        return labelled
    if which == "described":
        return select(Region.id).where(Region.verdict_id == Verdict.id,
                                       Region.operator_description.is_not(None)).exists()
    if which == "overruled":
        return and_(Verdict.operator_label.is_not(None), Verdict.operator_label != Verdict.label)
    return Verdict.operator_label == which


def list_verdicts(session: Session, f: HistoryFilter, *, limit: int = 50,
                  after: Cursor | None = None) -> Page:
    """One page of verdicts, newest first; pass `next_cursor` back for the next page."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(Verdict).where(*conditions(f), *after_cursor(after))
    stmt = stmt.order_by(Verdict.captured_at.desc(), Verdict.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], Cursor(last.captured_at, last.id))


def after_cursor(after: Cursor | None) -> list[ColumnElement[bool]]:
    """WHERE terms for the rows after `after` in (captured_at, id) descending order."""
    if after is None:
        return []
    # Spelled out rather than a row-value comparison so that the plain
    # `captured_at <= x` term can drive any of the (column, captured_at) indexes.
    return [Verdict.captured_at <= after.captured_at,
            or_(Verdict.captured_at < after.captured_at,
                and_(Verdict.captured_at == after.captured_at, Verdict.id < after.id))]


def count_matching(session: Session, f: HistoryFilter) -> int:
    return session.scalar(select(func.count()).select_from(Verdict).where(*conditions(f))) or 0


def _hour_bucket(session: Session) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc("hour", func.timezone("UTC", Verdict.captured_at)),
                            'YYYY-MM-DD"T"HH24:00:00"Z"')
    return func.strftime("%Y-%m-%dT%H:00:00Z", Verdict.captured_at)


def defect_rate(session: Session, f: HistoryFilter, by: GroupBy) -> list[RateRow]:
    """Verdicts and anomalous verdicts per hour (UTC), camera, line or product."""
    key = {"camera": Verdict.camera_id, "line": Verdict.line_id,
           "product": Verdict.product}.get(by) if by != "hour" else _hour_bucket(session)
    anomalous = func.sum(case((Verdict.label == "anomalous", 1), else_=0))
    stmt: Select = (select(key.label("key"), func.count().label("total"), anomalous)
                    .where(*conditions(f)).group_by(key).order_by(key))
    return [RateRow(str(k), int(t), int(a or 0)) for k, t, a in session.execute(stmt)]


def defect_kinds(session: Session, f: HistoryFilter, *, top: int = 10) -> list[KindRow]:
    """The most frequent defect kinds among matching verdicts: grouped by the kind each
    region shows (the operator's, else the describer's key), not by its sentence."""
    total = count_matching(session, f)
    kind = shown_kind()
    stmt = (select(kind, func.count(func.distinct(Region.verdict_id)), func.count(Region.id))
            .join(Verdict, Verdict.id == Region.verdict_id)
            .where(*conditions(f, with_description=False), kind.is_not(None))
            .group_by(kind)
            .order_by(func.count(func.distinct(Region.verdict_id)).desc(), kind)
            .limit(max(1, min(top, MAX_PAGE))))
    if f.description is not None:
        stmt = stmt.where(kind_matches(f))
    return [KindRow(d, int(v), int(r), v / total if total else 0.0)
            for d, v, r in session.execute(stmt)]


def _totals(session: Session, f: HistoryFilter) -> RateRow:
    anomalous = func.sum(case((Verdict.label == "anomalous", 1), else_=0))
    total, anom = session.execute(
        select(func.count(), anomalous).select_from(Verdict).where(*conditions(f))).one()
    return RateRow("window", int(total), int(anom or 0))


def trend(session: Session, f: HistoryFilter, *, now: datetime,
          default_window: timedelta = timedelta(hours=24), top: int = 10) -> Trend:
    """This window against the one of equal length just before it: rates and kinds."""
    current = f.window(now, default_window)
    assert current.since is not None and current.until is not None
    length = current.until - current.since
    previous = HistoryFilter(**{**current.__dict__, "since": current.since - length,
                                "until": current.since})
    now_kinds = {k.description: k.verdicts for k in defect_kinds(session, current, top=top)}
    before = {k.description: k.verdicts
              for k in defect_kinds(session, previous, top=MAX_PAGE)}
    kinds = [KindTrend(d, n, before.get(d, 0)) for d, n in now_kinds.items()]
    kinds.sort(key=lambda k: (-k.change, k.description))
    return Trend(_totals(session, current), _totals(session, previous), kinds)
