"""Defect-rate alarms on the real broker and Postgres: one event per alarm raised, none
repeated while it stays open, a new one after it cleared; counted in Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, delete, select

from pipeline.settings import KafkaSettings
from pipeline.storage.database import make_session_factory, transaction
from pipeline.storage.models import Alarm, AlarmRule
from tests.integration.operator_data import T0, Seeded
from workers.api.alarm_runner import AlarmEvaluator, AlarmMetrics, KafkaSender

pytestmark = pytest.mark.integration
TOPIC = "alarms"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def rules(pg_engine: Engine, seeded: Seeded) -> Iterator[dict[str, int]]:
    """line-1 above 50 % over 60 min (at least 3 verdicts); cam-c above 90 % over 60 min."""
    with transaction(make_session_factory(pg_engine)) as session:
        made = [AlarmRule(name="line-1 spike", scope="line", target="line-1", max_rate=0.5,
                          window_minutes=60, min_verdicts=3, created_by="admin-tester"),
                AlarmRule(name="cam-c spike", scope="camera", target="cam-c", max_rate=0.9,
                          window_minutes=60, min_verdicts=1, created_by="admin-tester")]
        session.add_all(made)
        session.flush()
        ids = {r.target: r.id for r in made}
    yield ids
    with transaction(make_session_factory(pg_engine)) as session:
        session.execute(delete(Alarm))
        session.execute(delete(AlarmRule))


def _read_topic(bootstrap: str) -> list[dict]:
    """Every record on the topic; polls until the broker has had nothing more for a while."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(TOPIC, 0)])
    consumer.seek_to_beginning()
    seen: list = []
    idle = 0
    while idle < 15:  # 15 empty polls of 200 ms after the last record
        batch = [r for records in consumer.poll(timeout_ms=200).values() for r in records]
        seen.extend(batch)
        idle = 0 if batch else idle + 1
    consumer.close()
    return [json.loads(r.value) | {"_key": r.key.decode()} for r in seen]


def test_one_event_per_alarm_raised_none_while_it_stays_open(
        pg_engine: Engine, kafka_bootstrap: str, rules: dict[str, int]) -> None:
    # The topic does not exist yet: the sender creates it (one partition) on first use.
    registry = CollectorRegistry()
    clock = Clock(T0 + timedelta(hours=4))  # 12:00: the last hour is all anomalous
    sender = KafkaSender(KafkaSettings(bootstrap_servers=kafka_bootstrap), TOPIC)
    evaluator = AlarmEvaluator(make_session_factory(pg_engine), AlarmMetrics(registry),
                               clock, sender)
    try:
        assert evaluator.run_once() == 2
        for minutes in (5, 10):  # still above bound: the same alarms stay open
            clock.now = T0 + timedelta(hours=4, minutes=minutes)
            assert evaluator.run_once() == 0
        clock.now = T0 + timedelta(hours=6)  # nothing in the last hour: both clear
        assert evaluator.run_once() == 0
        clock.now = T0 + timedelta(hours=4)  # the rate rises again: new alarms
        assert evaluator.run_once() == 2
        assert evaluator.run_once() == 0
    finally:
        sender.close()

    events = _read_topic(kafka_bootstrap)
    with make_session_factory(pg_engine)() as session:
        alarms = session.scalars(select(Alarm).order_by(Alarm.id)).all()
        assert [(a.rule_id, a.cleared_at is None) for a in alarms] == [
            (rules["line-1"], False), (rules["cam-c"], False),
            (rules["line-1"], True), (rules["cam-c"], True)]
        assert all(a.published_at is not None for a in alarms)
        ids = [a.id for a in alarms]
    assert [e["alarm_id"] for e in events] == ids  # each alarm once, in order
    first = events[0]
    assert first["_key"] == "line:line-1" and first["rule"] == "line-1 spike"
    # line-1 from 11:00 to 12:00: verdicts 18, 19, 21, 22, all anomalous
    assert (first["total"], first["anomalous"], first["rate"]) == (4, 4, 1.0)
    assert events[1]["_key"] == "camera:cam-c" and events[1]["total"] == 2
    assert registry.get_sample_value("clad_alarms_raised_total",
                                     {"scope": "line", "target": "line-1"}) == 2
    assert registry.get_sample_value("clad_alarm_events_published_total") == 4
    assert registry.get_sample_value("clad_alarms_open") == 2


def test_events_wait_in_the_table_while_the_broker_refuses(
        pg_engine: Engine, rules: dict[str, int]) -> None:
    sent: list[tuple[str, dict]] = []
    fail = True

    def flaky(key: str, value: dict[str, object]) -> None:
        if fail:
            raise ConnectionError("broker away")
        sent.append((key, value))

    registry = CollectorRegistry()
    evaluator = AlarmEvaluator(make_session_factory(pg_engine), AlarmMetrics(registry),
                               Clock(T0 + timedelta(hours=4)), flaky)
    assert evaluator.run_once() == 2
    assert sent == [] and registry.get_sample_value("clad_alarm_event_failures_total") == 1
    fail = False
    assert evaluator.run_once() == 0  # nothing new raised, but the two waiting go out
    assert [k for k, _ in sent] == ["line:line-1", "camera:cam-c"]
    assert evaluator.run_once() == 0 and len(sent) == 2


def test_a_disabled_rule_clears_its_alarm(pg_engine: Engine, rules: dict[str, int]) -> None:
    evaluator = AlarmEvaluator(make_session_factory(pg_engine),
                               AlarmMetrics(CollectorRegistry()),
                               Clock(T0 + timedelta(hours=4)), None)
    assert evaluator.run_once() == 2
    with transaction(make_session_factory(pg_engine)) as session:
        session.get(AlarmRule, rules["line-1"]).enabled = False
    assert evaluator.run_once() == 0
    with make_session_factory(pg_engine)() as session:
        open_rules = session.scalars(select(Alarm.rule_id).where(Alarm.cleared_at.is_(None)))
        assert list(open_rules) == [rules["cam-c"]]
