"""Bad frames and a database outage: the worker routes, waits, resumes; nothing is lost."""

from __future__ import annotations

import re
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.errors import CorruptRecordError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from pipeline.frames import (
    H_CAMERA,
    H_CAPTURED_AT,
    H_PRODUCT,
    H_REJECT_DETAIL,
    H_REJECT_REASON,
    H_SCHEMA,
    H_SOURCE,
    H_WIDTH,
    FrameHeader,
    RejectReason,
    make_envelope,
    to_kafka_headers,
)
from pipeline.kafka_io import ensure_topics
from pipeline.producer import FramePublisher
from pipeline.settings import KafkaSettings
from tests.frame_bombs import lying_jpeg
from tests.integration.pipeline_support import (
    PRODUCTS,
    free_port,
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


def test_a_database_that_stops_answering_is_survived_and_sigterm_stays_bounded(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    """Packets to Postgres dropped (no reset): the stuck delivery is cut by the checkout
    deadline and retried; after the network returns the worker resumes by itself; a
    SIGTERM during a second silence ends the worker within its shutdown bound."""
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    ids = publish(kafka, 300)
    log_path = tmp_path / "worker.log"
    shutdown_bound_s = 12
    worker = start_worker(worker_env(kafka, proxied, redis_url, CLAD_BATCH_SIZE="4",
                                     CLAD_DB_CHECKOUT_TIMEOUT_S="6",
                                     CLAD_SHUTDOWN_TIMEOUT_S=str(shutdown_bound_s)), log_path)

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: verdict_count(clean_db) >= 20, timeout_s=60, what="first verdicts",
                   alive=alive)
        proxy.blackhole()  # with pooled connections open and a delivery in progress
        time.sleep(16)
        more = publish(kafka, 100, start=300)
        alive()
        proxy.restore()
        wait_until(lambda: verdict_count(clean_db) >= 400, timeout_s=120,
                   what="all 400 verdicts after the database answered again", alive=alive)
        by_frame = verdicts_by_frame(clean_db)
        assert set(by_frame) == set(ids) | set(more)
        assert set(by_frame.values()) == {1}
        assert "database did not answer" in log_path.read_text(), "the silence was detected"
        # A second silence, then SIGTERM: close() must not wait on the stuck delivery.
        last = publish(kafka, 40, start=400)
        proxy.blackhole()
        time.sleep(3)
        worker.terminate()
        try:
            code = worker.wait(shutdown_bound_s + 15)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise AssertionError(f"SIGTERM did not end the worker within "
                                 f"{shutdown_bound_s} s (+15 s slack)") from None
        assert code in (0, 3), f"unexpected exit code {code}"
    finally:
        stop_worker(worker)
        proxy.close()
    assert set(verdicts_by_frame(clean_db)) <= set(ids) | set(more) | set(last)


def _get(url: str) -> tuple[int | None, str]:
    """(HTTP status, body); None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None, ""


def test_a_hung_inference_fails_the_liveness_probe_while_metrics_still_answer(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    """An engine that never returns: /metrics answers from its own thread all along, so
    the probe reads /healthz, which stays 200 on an idle line and turns 503 once the
    loop has made no progress for CLAD_STALL_AFTER_S; SIGTERM still ends the worker
    within its bound."""
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    ensure_topics(kafka)
    port, stall_s, shutdown_bound_s = free_port(), 10, 3
    base = f"http://127.0.0.1:{port}"
    worker = start_worker(worker_env(
        kafka, postgres_url, redis_url, CLAD_METRICS_PORT=str(port),
        CLAD_ENGINE_FACTORY="tests.integration.pipeline_support:hanging_engines",
        CLAD_STALL_AFTER_S=str(stall_s), CLAD_SHUTDOWN_TIMEOUT_S=str(shutdown_bound_s)),
        tmp_path / "worker.log")

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: _get(f"{base}/healthz")[0] == 200, timeout_s=60,
                   what="the worker's /healthz", alive=alive)
        time.sleep(stall_s + 2)  # an idle line is not a stalled one: the loop goes round
        assert _get(f"{base}/healthz") == (200, "ok\n")
        publish(kafka, 4)  # the first batch's inference never returns
        wait_until(lambda: _get(f"{base}/healthz")[0] == 503, timeout_s=stall_s + 60,
                   what="/healthz to report the stall", alive=alive)
        assert "stalled: no progress for" in _get(f"{base}/healthz")[1]
        status, metrics = _get(f"{base}/metrics")
        assert status == 200
        silent = re.search(r"^clad_worker_silent_seconds (\S+)$", metrics, re.MULTILINE)
        assert silent is not None and float(silent.group(1)) > stall_s
        assert verdict_count(clean_db) == 0
        worker.terminate()
        try:
            code = worker.wait(shutdown_bound_s + 15)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise AssertionError("SIGTERM did not end the hung worker within its bound") from None
        assert code == 3, f"a hung worker exits by its shutdown bound (3), not {code}"
    finally:
        stop_worker(worker)


def _png_bomb(width: int, height: int) -> bytes:
    """A real, valid 1-bit grayscale PNG of width x height zeros: ~100 KB on the wire,
    gigabytes once OpenCV decodes it to 8-bit BGR."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_image_bombs_go_to_the_dlq_undecoded(kafka_bootstrap: str, postgres_url: str,
                                             redis_url: str, clean_db: Engine,
                                             tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    ensure_topics(kafka)
    bomb = _png_bomb(30000, 30000)
    assert len(bomb) < 200_000
    good = make_envelope(png_frame(1), camera_id="cam-0", line_id="line-1",
                         product=PRODUCTS[0])
    honest = FrameHeader(camera_id="cam-bomb", line_id="line-1", product=PRODUCTS[0],
                         content_type="image/png", width=30000, height=30000)
    lying = honest.model_copy(update={"width": 64, "height": 64})
    with FramePublisher(kafka) as publisher:
        publisher.send_raw(b"cam-bomb", bomb, [*to_kafka_headers(honest), ("case", b"honest")])
        publisher.send_raw(b"cam-bomb", bomb, [*to_kafka_headers(lying), ("case", b"lying")])
        publisher.publish(good)
    worker = start_worker(worker_env(kafka, postgres_url, redis_url), tmp_path / "worker.log")
    try:
        def alive() -> None:
            assert worker.poll() is None, "worker died on an image bomb"
        wait_until(lambda: verdict_count(clean_db) >= 1, timeout_s=90, what="the good verdict",
                   alive=alive)
        dlq = _read_topic(kafka_bootstrap, kafka.topic_dlq, 2)
        peak = _peak_rss_bytes(worker.pid)
    finally:
        stop_worker(worker)
    reasons = {dict(r.headers)["case"].decode(): dict(r.headers)[H_REJECT_REASON].decode()
               for r in dlq}
    assert reasons == {"honest": RejectReason.PIXEL_BUDGET.value,
                       "lying": RejectReason.PIXEL_BUDGET.value}
    assert peak < 1024**3, f"worker peak RSS {peak / 1024**2:.0f} MiB"


def _peak_address_space_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak in /proc status")


def _poison_then_good(kafka: KafkaSettings, poison: list[tuple[bytes, list]], *,
                      before: int, behind: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Good frames, the poison records, more good frames: all with one key, so all on one
    partition, in that order: the frames behind the poison are scored only if the worker
    gets past it."""
    ensure_topics(kafka)
    ids_before, ids_behind = [], []
    with FramePublisher(kafka) as publisher:
        for i in range(before + behind):
            if i == before:
                for value, headers in poison:
                    publisher.send_raw(b"cam-p", value, headers)
            envelope = make_envelope(png_frame(i), camera_id="cam-p", line_id="line-1",
                                     product=PRODUCTS[i % 2])
            publisher.publish(envelope)
            (ids_before if i < before else ids_behind).append(envelope.header.frame_id)
    assert publisher.failed == 0
    return ids_before, ids_behind


def _score_past_the_poison(kafka: KafkaSettings,
                           published: tuple[list[uuid.UUID], list[uuid.UUID]],
                           postgres_url: str, redis_url: str, clean_db: Engine,
                           tmp_path: Path, *, dlq_records: int) -> list:
    """A worker on the stream _poison_then_good published: every good frame before and
    behind the poison is scored, the worker stays up and stops cleanly; the DLQ records."""
    before, behind = published
    worker = start_worker(worker_env(kafka, postgres_url, redis_url), tmp_path / "worker.log")

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: verdict_count(clean_db) >= len(before) + len(behind), timeout_s=90,
                   what="the good frames' verdicts", alive=alive)
        dlq = _read_topic(kafka.bootstrap_servers, kafka.topic_dlq, dlq_records)
        alive()
    finally:
        code = stop_worker(worker)
    assert set(verdicts_by_frame(clean_db)) == set(before) | set(behind)
    assert code == 0
    return dlq


def test_a_date_past_the_calendar_goes_to_the_dlq_and_the_frames_behind_it_are_scored(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    """The records that crashed every worker taking their partition (OverflowError out of
    the header validation, offset never committed): now two DLQ records with a reason."""
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    good = make_envelope(png_frame(99), camera_id="cam-p", line_id="line-1",
                         product=PRODUCTS[0])
    poison = [(good.image, [(k, stamp if k == H_CAPTURED_AT else v)
                            for k, v in to_kafka_headers(good.header)] + [("case", stamp)])
              for stamp in (b"9999-12-31T23:59:59-14:00", b"0001-01-01T00:00:00+14:00")]
    published = _poison_then_good(kafka, poison, before=10, behind=30)
    dlq = _score_past_the_poison(kafka, published, postgres_url, redis_url, clean_db, tmp_path,
                                 dlq_records=2)
    assert len(dlq) == 2
    reasons = {dict(r.headers)["case"]: dict(r.headers)[H_REJECT_REASON].decode()
               for r in dlq}
    assert reasons == {stamp: RejectReason.INVALID_HEADERS.value
                       for stamp in (b"9999-12-31T23:59:59-14:00", b"0001-01-01T00:00:00+14:00")}
    details = [dict(r.headers)[H_REJECT_DETAIL].decode() for r in dlq]
    assert all("captured_at" in d and "UTC" in d for d in details)


# The worker's address space at steady state is ~1.2 GiB (VmPeak, mostly libraries and
# thread arenas, little of it resident); 3 GiB leaves room for its real work, while one
# decode of the lying JPEG's 30000x30000 frame needs 2.5 GiB more (BGR) and peaked at
# 5.2 GB before this fix.
_WORKER_ADDRESS_SPACE = 3 * 1024**3


def test_a_jpeg_that_hides_its_size_goes_to_the_dlq_undecoded_under_a_memory_limit(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    """Four 658-byte JPEGs whose FF 00 after SOI hid a 30000x30000 frame from the size
    check (libjpeg reads the real one): refused by the size libjpeg would read, before
    any decode, in a worker that could not survive one such decode; the frames behind
    them are scored."""
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    lying = lying_jpeg()
    header = FrameHeader(camera_id="cam-p", line_id="line-1", product=PRODUCTS[0],
                         content_type="image/jpeg", width=64, height=64)
    poison = [(lying, [*to_kafka_headers(header.model_copy(update={"frame_id": uuid.uuid4()})),
                       ("case", str(i).encode())]) for i in range(4)]
    before, behind = _poison_then_good(kafka, poison, before=6, behind=20)
    worker = start_worker(worker_env(kafka, postgres_url, redis_url), tmp_path / "worker.log",
                          address_space_bytes=_WORKER_ADDRESS_SPACE)

    def alive() -> None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
    try:
        wait_until(lambda: verdict_count(clean_db) >= 26, timeout_s=90,
                   what="the 26 good frames' verdicts", alive=alive)
        dlq = _read_topic(kafka_bootstrap, kafka.topic_dlq, 4)
        alive()
        peak_rss = _peak_rss_bytes(worker.pid)
        peak_as = _peak_address_space_bytes(worker.pid)
    finally:
        code = stop_worker(worker)
    print(f"worker peak RSS {peak_rss / 1024**2:.0f} MiB, address space "
          f"{peak_as / 1024**2:.0f} MiB (limit {_WORKER_ADDRESS_SPACE / 1024**2:.0f} MiB)")
    assert set(verdicts_by_frame(clean_db)) == set(before) | set(behind)
    assert code == 0
    assert sorted(dict(r.headers)["case"] for r in dlq) == [b"0", b"1", b"2", b"3"]
    for record in dlq:
        headers = dict(record.headers)
        assert headers[H_REJECT_REASON].decode() == RejectReason.PIXEL_BUDGET.value
        assert "30000x30000" in headers[H_REJECT_DETAIL].decode()
    assert peak_rss < 1024**3, f"worker peak RSS {peak_rss / 1024**2:.0f} MiB"


class _UnreadableKey(str):
    """A header key whose bytes on the wire are not UTF-8: the producer writes what
    encode() returns, as any client in another language may."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:  # noqa: ARG002
        return b"\xff\xfeclad-\xc3("


def test_a_record_the_client_cannot_parse_goes_to_the_dlq_and_the_frames_behind_it_are_scored(
        kafka_bootstrap: str, postgres_url: str, redis_url: str, clean_db: Engine,
        tmp_path: Path) -> None:
    """A header key that is not UTF-8 made kafka-python raise inside poll() at the same
    offset on every try: the worker died, and so did every worker taking the partition."""
    kafka = kafka_settings(kafka_bootstrap, uuid.uuid4().hex[:8])
    good = make_envelope(png_frame(98), camera_id="cam-p", line_id="line-1",
                         product=PRODUCTS[0])
    poison = [(good.image, [*to_kafka_headers(good.header), (_UnreadableKey("x"), b"1")])]
    published = _poison_then_good(kafka, poison, before=10, behind=30)
    probe = KafkaConsumer(kafka.topic_frames, bootstrap_servers=kafka_bootstrap,
                          group_id=None, auto_offset_reset="earliest",
                          consumer_timeout_ms=5000)
    try:  # the record really is unreadable to this client
        with pytest.raises(CorruptRecordError, match="UnicodeDecodeError"):
            for _ in probe:
                pass
    finally:
        probe.close()
    dlq = _score_past_the_poison(kafka, published, postgres_url, redis_url, clean_db, tmp_path,
                                 dlq_records=1)
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers[H_REJECT_REASON].decode() == RejectReason.UNREADABLE.value
    assert "UnicodeDecodeError" in headers[H_REJECT_DETAIL].decode()
    # where it lies: the 11th record of the one partition the key "cam-p" maps to
    topic, _partition, offset = headers[H_SOURCE].decode().split("/")
    assert topic == kafka.topic_frames and offset == "10"
