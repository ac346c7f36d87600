"""The alarm evaluator inside the API process: a daemon thread that evaluates the
rules every CLAD_ALARM_INTERVAL_S, then sends the new alarms to the `alarms` topic.

Why in the API process rather than a cron job: the API is the one long-running
process that already holds the database and serves the console that shows the
alarms, and a minute-scale timer needs no scheduler of its own. Several replicas
are safe: one open alarm per rule is enforced by a unique index, and events are
sent from rows locked with SKIP LOCKED. Events are an outbox: an alarm is stored
first and marked published once the broker acknowledged it, so a broker outage
delays events and loses none (a crash between the acknowledgement and the mark
re-sends that one event: at least once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.orm import Session, sessionmaker

from pipeline.settings import KafkaSettings
from pipeline.storage.alarms import evaluate, event, unpublished
from pipeline.storage.database import transaction

log = logging.getLogger(__name__)


class EventSender(Protocol):
    def __call__(self, key: str, value: dict[str, object]) -> None:
        """Send one record and return once the broker has acknowledged it (or raise)."""


class AlarmMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.raised = Counter("clad_alarms_raised", "Alarms raised", ["scope", "target"],
                              registry=registry)
        self.open = Gauge("clad_alarms_open", "Alarms open now", registry=registry)
        self.published = Counter("clad_alarm_events_published",
                                 "Alarm events on the alarms topic", registry=registry)
        self.publish_failures = Counter("clad_alarm_event_failures",
                                        "Alarm events the broker did not take (retried)",
                                        registry=registry)
        self.evaluations = Counter("clad_alarm_evaluations", "Evaluation passes",
                                   registry=registry)


class KafkaSender:
    """Sends alarm events with an acks=all producer, built on first use so that an API
    started while the broker is away still serves (the events wait in the table)."""

    def __init__(self, settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._topic = topic
        self._timeout_s = timeout_s
        self._producer = None

    def __call__(self, key: str, value: dict[str, object]) -> None:
        if self._producer is None:
            self._producer = self._connect()
        self._producer.send(self._topic, key=key.encode(),
                            value=json.dumps(value).encode()).get(timeout=self._timeout_s)

    def _connect(self):  # noqa: ANN202 - kafka-python producer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from pipeline.kafka_io import build_admin, build_producer

        admin = build_admin(self._settings, bootstrap_timeout_ms=int(self._timeout_s * 1000))
        try:
            if self._topic not in set(admin.list_topics()):
                # One partition: consumers see the alarms in the order they were raised.
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(self._topic, 1, 1)])
        finally:
            admin.close()
        return build_producer(self._settings, client_id="clad-alarms")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self._timeout_s)


class AlarmEvaluator:
    def __init__(self, sessions: sessionmaker[Session], metrics: AlarmMetrics,
                 clock: Callable[[], datetime], sender: EventSender | None,
                 destination: str = "sent once through the configured sender") -> None:
        # Where the alarms page says raised alarms go, in the running configuration.
        self.destination = destination if sender is not None else (
            "not sent anywhere: no Kafka broker is configured (CLAD_BOOTSTRAP_SERVERS is "
            "'embedded'); it is kept here, and sent once the API runs with a broker")
        self._sessions = sessions
        self._metrics = metrics
        self._clock = clock
        self._sender = sender
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Evaluate every rule, then publish what is unpublished; returns alarms raised."""
        with transaction(self._sessions) as session:
            result = evaluate(session, self._clock())
            raised = [(a.id, a.rule.name, a.rule.scope, a.rule.target, a.rate, a.anomalous,
                       a.total) for a in result.raised]
        # Counted once committed: a pass that rolled back raised nothing.
        for alarm_id, name, scope, target, rate, anomalous, total in raised:
            self._metrics.raised.labels(scope, target).inc()
            log.warning("alarm %s raised: rule %r, %s %s at %.1f%% (%d/%d)", alarm_id, name,
                        scope, target, 100 * rate, anomalous, total)
        self._metrics.open.set(result.open)
        self._metrics.evaluations.inc()
        self.publish()
        return len(raised)

    def publish(self) -> int:
        """Send the stored, unsent alarm events; stop at the first the broker refuses."""
        if self._sender is None:
            return 0
        sent = 0
        with transaction(self._sessions) as session:
            for alarm in unpublished(session):
                try:
                    self._sender(f"{alarm.rule.scope}:{alarm.rule.target}", event(alarm))
                except Exception as exc:  # noqa: BLE001 - any broker error: retry next pass
                    self._metrics.publish_failures.inc()
                    log.warning("alarm %s not published yet: %s", alarm.id, exc)
                    break
                alarm.published_at = self._clock()
                session.flush()
                sent += 1
                self._metrics.published.inc()
        return sent

    def start(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - a bad pass must not end the timer
                    log.exception("alarm evaluation failed; next try in %.0f s", interval_s)

        self._thread = threading.Thread(target=loop, name="clad-alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
