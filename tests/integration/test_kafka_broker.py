"""The real broker round trip the pipeline relies on: a consumer group with
manual commits resumes exactly at the committed offsets."""

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             **GROUP_TIMEOUTS)
    seen: list = []
    for _ in range(200):  # the first group join takes a few seconds on Tansu
        for records in consumer.poll(timeout_ms=200, max_records=count - len(seen)).values():
            seen.extend(records)
        if len(seen) >= count:
            break
    consumer.commit()
    consumer.close()
    return seen


def test_group_commit_and_resume(kafka_bootstrap: str) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(40):
        producer.send(topic, key=f"cam-{i % 4}".encode(), value=f"frame-{i}".encode())
    producer.flush()
    producer.close()

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _consume(kafka_bootstrap, topic, group, 25)
    assert len(first) == 25
    rest = _consume(kafka_bootstrap, topic, group, 15)
    values = [r.value.decode() for r in first + rest]
    assert sorted(values) == sorted(f"frame-{i}" for i in range(40))
    assert len(set(values)) == 40  # nothing consumed twice across the restart

    check = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                          enable_auto_commit=False)
    committed = sum(check.committed(TopicPartition(topic, p)) or 0 for p in (0, 1))
    check.close()
    assert committed == 40


def test_worker_lag_gauge_counts_records_behind_on_the_real_broker(kafka_bootstrap: str) -> None:
    """The lag gauge reads the high watermark from fetch responses: right on Tansu too,
    where end_offsets() is not (records batched by the producer's linger)."""
    from types import SimpleNamespace

    from workers.streaming.metrics import WorkerMetrics
    from workers.streaming.worker import InferenceWorker

    topic = f"lag-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=50)
    for i in range(50):
        producer.send(topic, value=f"frame-{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    seen = 0
    for _ in range(100):
        seen += sum(len(r) for r in consumer.poll(timeout_ms=200, max_records=10 - seen).values())
        if seen >= 10:
            break
    worker = SimpleNamespace(consumer=consumer, metrics=WorkerMetrics())
    InferenceWorker._record_lag(worker)  # type: ignore[arg-type]
    consumer.close()
    assert seen == 10
    assert worker.metrics.registry.get_sample_value("clad_consumer_lag", {"partition": "0"}) == 40
