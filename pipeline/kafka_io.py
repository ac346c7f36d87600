"""kafka-python clients built from KafkaSettings, and topic creation.

Only the Kafka protocol through kafka-python, so the embedded Tansu broker and
Apache Kafka serve the same code. "embedded" must be resolved to a real address
(pipeline.broker) before any of these builders is called.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.settings import EMBEDDED_BROKER, KafkaSettings

log = logging.getLogger(__name__)

# Headers, key and batch framing on top of the image bytes.
_RECORD_OVERHEAD = 64 * 1024


def bootstrap(settings: KafkaSettings) -> list[str]:
    if settings.bootstrap_servers == EMBEDDED_BROKER:
        raise ValueError("bootstrap_servers is 'embedded': start pipeline.broker.EmbeddedBroker "
                         "and pass its address first")
    return [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()]


def build_producer(settings: KafkaSettings, *, client_id: str = "clad-producer") -> KafkaProducer:
    """acks=all with retries; kafka-python 3's idempotent producer drops its own resends."""
    return KafkaProducer(
        bootstrap_servers=bootstrap(settings),
        client_id=client_id,
        acks="all",
        retries=10,
        linger_ms=5,
        # The contract's frame limit, not the client's 1 MB default, bounds a record.
        max_request_size=settings.max_frame_bytes + _RECORD_OVERHEAD,
        compression_type=None if settings.compression == "none" else settings.compression,
    )


def build_consumer(settings: KafkaSettings, *, max_poll_records: int,
                   client_id: str = "clad-worker") -> KafkaConsumer:
    """A group member with manual commits: offsets move only after verdicts are stored."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap(settings),
        client_id=client_id,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        max_partition_fetch_bytes=settings.fetch_partition_bytes,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )


def build_admin(settings: KafkaSettings, *, bootstrap_timeout_ms: int = 30_000
                ) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="clad-admin",
                            bootstrap_timeout_ms=bootstrap_timeout_ms)


class BrokerUnavailableError(RuntimeError):
    """The Kafka bootstrap servers did not answer in time (one line for the operator)."""


def ensure_topics(settings: KafkaSettings, *, timeout_s: float = 30.0,
                  stop: threading.Event | None = None) -> None:
    """Create frames, verdicts and DLQ topics if missing; wait for the broker meanwhile.

    Raises BrokerUnavailableError after timeout_s; returns early when `stop` is set."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout_s
    warned = False
    # kafka-python logs each refused connection; while waiting, one line of ours says it.
    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        while True:
            try:
                # Short attempts, so a stop request is seen within a couple of seconds.
                admin = build_admin(settings, bootstrap_timeout_ms=2000)
                break
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailableError(
                        f"Kafka {settings.bootstrap_servers} did not answer within "
                        f"{timeout_s:.0f} s ({type(exc).__name__})") from None
                if not warned:
                    log.warning("Kafka %s not reachable yet (%s); waiting up to %.0f s",
                                settings.bootstrap_servers, type(exc).__name__, timeout_s)
                    warned = True
                if stop.wait(1.0):
                    return
    finally:
        client_log.setLevel(level)
    try:
        existing = set(admin.list_topics())
        wanted = [settings.topic_frames, settings.topic_verdicts, settings.topic_dlq]
        missing = [NewTopic(name, settings.topic_partitions, 1)
                   for name in wanted if name not in existing]
        if missing:
            # another process may create one between list and create
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        admin.close()
