"""Bad frames and a database outage: the worker routes, waits, resumes; nothing is lost."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from pipeline.frames import (
    H_CAMERA,
    H_PRODUCT,
    H_REJECT_DETAIL,
    H_REJECT_REASON,
    H_SCHEMA,
    H_WIDTH,
    RejectReason,
    make_envelope,
    to_kafka_headers,
)
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from tests.integration.pipeline_support import (
    PRODUCTS,
    kafka_settings,
    png_frame,
    publish,
    start_worker,
    stop_worker,
    verdict_count,
    verdicts_by_frame,
    wait_until,
    worker_env,
)
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_FRAME_BYTES = 50_000


def _malformed(i: int) -> tuple[RejectReason, bytes | None, list[tuple[str, bytes]]]:
    """Twenty of each kind of bad frame, each of which the contract names a reason for."""
    good = make_envelope(png_frame(10_000 + i), camera_id="cam-bad", line_id="line-1",
                         product=PRODUCTS[0])
    headers = to_kafka_headers(good.header)
    kind = i % 5
    if kind == 0:
        return RejectReason.UNDECODABLE, b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, headers
    if kind == 1:
        return RejectReason.UNSUPPORTED_SCHEMA, good.image, [
            (k, b"99" if k == H_SCHEMA else v) for k, v in headers]
    if kind == 2:
        return RejectReason.OVERSIZE, b"\x00" * (MAX_FRAME_BYTES + 1), headers
    if kind == 3:
        return RejectReason.UNKNOWN_PRODUCT, good.image, [
            (k, b"teapot" if k == H_PRODUCT else v) for k, v in headers]
    return RejectReason.INVALID_HEADERS, good.image, [
        (k, b"wide" if k == H_WIDTH else v) for k, v in headers if k != H_CAMERA]


def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def test_malformed_frames_go_to_the_dlq_with_reasons_and_good_ones_get_verdicts(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8], max_frame_bytes=MAX_FRAME_BYTES)
    ensure_topics(kafka)
    expected_reasons: dict[str, str] = {}
    good_ids = []
    with FramePublisher(kafka) as publisher:
        for i in range(600):
            if i % 6 == 5:  # 100 bad ones, interleaved with the 500 good ones
                reason, value, headers = _malformed(len(expected_reasons))
                marker = f"bad-{i}"
                publisher.send_raw(b"cam-bad", value, [*headers, ("test-marker", marker.encode())])
                expected_reasons[marker] = reason.value
            else:
                envelope = make_envelope(png_frame(i), camera_id=f"cam-{i % 3}",
                                         line_id="line-1", product=PRODUCTS[i % 2])
                publisher.publish(envelope)
                good_ids.append(envelope.header.frame_id)
    assert len(expected_reasons) == 100 and len(good_ids) == 500
    worker = start_worker(worker_env(kafka, postgres_url, redis_url), tmp_path / "worker.log")
    try:
        def alive() -> None:
            assert worker.poll() is None, "worker died on bad input"
        wait_until(lambda: verdict_count(clean_db) >= 500, timeout_s=120, what="500 verdicts",
                   alive=alive)
        dlq = _read_topic(kafka_bootstrap, kafka.topic_dlq, 100)
        alive()
    finally:
        stop_worker(worker)
    assert set(verdicts_by_frame(clean_db)) == set(good_ids)
    assert len(dlq) == 100
    got = {}
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers[H_REJECT_DETAIL], "every DLQ record explains itself"
        got[headers["test-marker"]] = headers[H_REJECT_REASON]  # original headers kept
    assert got == expected_reasons


def test_database_cut_for_ten_seconds_mid_stream_loses_no_verdict(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    ids = publish(kafka, 300)
    log_path = tmp_path / "worker.log"
    # Small batches: the stream is still flowing when the cut lands; 100 more come during it.
    worker = start_worker(worker_env(kafka, proxied, redis_url,
                                     CLAD_BATCH_SIZE="4"), log_path)

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: verdict_count(clean_db) >= 20, timeout_s=60, what="first verdicts",
                   alive=alive)
        proxy.cut()
        during = verdict_count(clean_db)
        time.sleep(10)
        assert verdict_count(clean_db) == during, "nothing can be written through a cut"
        more = publish(kafka, 100, start=300)
        alive()
        proxy.restore()
        wait_until(lambda: verdict_count(clean_db) >= 400, timeout_s=120,
                   what="all 400 verdicts after the database came back", alive=alive)
    finally:
        code = stop_worker(worker)
        proxy.close()
    by_frame = verdicts_by_frame(clean_db)
    assert set(by_frame) == set(ids) | set(more)
    assert set(by_frame.values()) == {1}
    assert code == 0
    assert "database failed" in log_path.read_text(), "the outage was seen and retried"
