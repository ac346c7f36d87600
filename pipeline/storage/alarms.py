"""Defect-rate alarms on stored verdicts: evaluate rules, open and clear alarms,
acknowledge them, and hand the not yet published ones to whoever sends events.

A rule is above its bound when its line or camera had at least `min_verdicts`
verdicts in the last `window_minutes` and more than `max_rate` of them were
anomalous. While it stays above, its one alarm stays open (a partial unique index
allows one open alarm per rule); it clears when the rate falls back or the rule is
disabled, and the next rise opens a new alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from pipeline.storage.models import Alarm, AlarmRule, Verdict


class AlarmStateError(ValueError):
    """An action that does not fit the alarm's state (acknowledged twice, ...)."""


@dataclass(frozen=True)
class RuleReading:
    rule: AlarmRule
    since: datetime
    until: datetime
    total: int
    anomalous: int

    @property
    def rate(self) -> float:
        return self.anomalous / self.total if self.total else 0.0

    @property
    def above(self) -> bool:
        return self.total >= self.rule.min_verdicts and self.rate > self.rule.max_rate


@dataclass(frozen=True)
class Evaluation:
    raised: list[Alarm]
    cleared: list[Alarm]
    open: int  # alarms open after this pass


def read_rule(session: Session, rule: AlarmRule, now: datetime) -> RuleReading:
    since = now - timedelta(minutes=rule.window_minutes)
    column = Verdict.line_id if rule.scope == "line" else Verdict.camera_id
    anomalous = func.sum(case((Verdict.label == "anomalous", 1), else_=0))
    total, anom = session.execute(select(func.count(), anomalous).where(
        column == rule.target, Verdict.captured_at >= since,
        Verdict.captured_at < now)).one()
    return RuleReading(rule, since, now, int(total), int(anom or 0))


def _open_alarms(session: Session) -> dict[int, Alarm]:
    return {a.rule_id: a for a in session.scalars(
        select(Alarm).where(Alarm.cleared_at.is_(None)))}


def evaluate(session: Session, now: datetime) -> Evaluation:
    """One pass over every rule: open alarms for rules above bound, clear the rest."""
    open_by_rule = _open_alarms(session)
    raised: list[Alarm] = []
    cleared: list[Alarm] = []
    for rule in session.scalars(select(AlarmRule).order_by(AlarmRule.id)):
        current = open_by_rule.get(rule.id)
        reading = read_rule(session, rule, now) if rule.enabled else None
        if reading is not None and reading.above:
            if current is None:
                alarm = _raise(session, reading, now)
                if alarm is not None:
                    raised.append(alarm)
        elif current is not None:
            current.cleared_at = now
            cleared.append(current)
    session.flush()
    count = session.scalar(select(func.count()).select_from(Alarm)
                           .where(Alarm.cleared_at.is_(None))) or 0
    return Evaluation(raised, cleared, int(count))


def _raise(session: Session, reading: RuleReading, now: datetime) -> Alarm | None:
    alarm = Alarm(rule_id=reading.rule.id, raised_at=now, window_start=reading.since,
                  window_end=reading.until, total=reading.total,
                  anomalous=reading.anomalous, rate=reading.rate)
    try:
        # Another evaluator (a second API replica) may have opened it meanwhile.
        with session.begin_nested():
            session.add(alarm)
            session.flush()
    except IntegrityError:
        return None
    return alarm


def unpublished(session: Session, *, limit: int = 100) -> list[Alarm]:
    """Alarms whose event is not on the topic yet, oldest first, locked for this sender.

    SKIP LOCKED: a second evaluator passes over the rows this one is sending.
    """
    return list(session.scalars(
        select(Alarm).where(Alarm.published_at.is_(None))
        .options(selectinload(Alarm.rule)).order_by(Alarm.id).limit(limit)
        .with_for_update(skip_locked=True, of=Alarm)))


def acknowledge(session: Session, alarm_id: int, *, who: str, now: datetime) -> Alarm:
    alarm = session.get(Alarm, alarm_id, options=[selectinload(Alarm.rule)],
                        with_for_update=True)
    if alarm is None:
        raise LookupError(f"alarm {alarm_id} not found")
    if alarm.acknowledged_at is not None:
        raise AlarmStateError(f"alarm {alarm_id} was acknowledged by {alarm.acknowledged_by} "
                              f"at {alarm.acknowledged_at.isoformat()}")
    alarm.acknowledged_at = now
    alarm.acknowledged_by = who
    session.flush()
    return alarm


def list_alarms(session: Session, *, state: str, limit: int = 100) -> list[Alarm]:
    """Alarms newest first. state: "active" (open and not acknowledged: the console's
    banner), "open" (not cleared) or "all"."""
    stmt = select(Alarm).options(selectinload(Alarm.rule)).order_by(Alarm.id.desc())
    if state in ("active", "open"):
        stmt = stmt.where(Alarm.cleared_at.is_(None))
    if state == "active":
        stmt = stmt.where(Alarm.acknowledged_at.is_(None))
    return list(session.scalars(stmt.limit(limit)))


def event(alarm: Alarm) -> dict[str, object]:
    """The alarms topic's record for one raised alarm (JSON)."""
    rule = alarm.rule
    return {"type": "alarm_raised", "alarm_id": alarm.id, "rule_id": rule.id,
            "rule": rule.name, "scope": rule.scope, "target": rule.target,
            "rate": alarm.rate, "anomalous": alarm.anomalous, "total": alarm.total,
            "max_rate": rule.max_rate, "window_minutes": rule.window_minutes,
            "window_start": alarm.window_start.isoformat(),
            "window_end": alarm.window_end.isoformat(),
            "raised_at": alarm.raised_at.isoformat()}
