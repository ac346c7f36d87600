"""The inference worker: Kafka frames -> verdicts in the database, exactly once in effect.

Per micro-batch: poll -> validate -> decode (thread pool) -> infer per product;
then, on the delivery thread while the next batch is inferred: regions +
heatmaps -> ONE DB transaction -> verdict events + DLQ records acked; then back
here, in batch order: commit offsets. Offsets move only after the verdicts are
durable; the store is idempotent on frame id, so a crash at any point
redelivers, never loses.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from sqlalchemy.orm import Session, sessionmaker

from pipeline.frames import FrameEnvelope, FrameRejectedError, RejectReason, parse_frame
from pipeline.region_cache import RegionCache
from pipeline.settings import Settings
from pipeline.storage.records import VerdictRecord
from workers.streaming.batching import collect_batch, next_offsets
from workers.streaming.decode import DecodedFrame, start_decode
from workers.streaming.delivery import (
    DeliveryStoppedError,
    KafkaSendError,
    Retrier,
    dlq_message,
    dlq_unreadable_message,
    drift_event,
    now_utc,
    send_all,
    store_isolated,
    verdict_event,
)
from workers.streaming.descriptions import DescribedBatch, describe_batch
from workers.streaming.isolation import guarded
from workers.streaming.liveness import Liveness
from workers.streaming.metrics import WorkerMetrics
from workers.streaming.scoring import ScoringEngine
from workers.streaming.unreadable import PastUnreadable, UnreadableRecord
from workers.streaming.verdicts import Scored, infer_product, to_verdicts_isolated

log = logging.getLogger(__name__)

# A commit refused for one of these only succeeds after the next poll() rejoins the group.
MEMBERSHIP_ERRORS = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError,
                     UnknownMemberIdError, FencedInstanceIdError)


@dataclass
class _Prepared:
    """A batch validated, with its decode running in the pool."""

    records: list[ConsumerRecord]
    engines: Mapping[str, ScoringEngine]  # the ones it was decoded for
    accepted: list[tuple[ConsumerRecord, FrameEnvelope]]
    rejected: list[tuple[ConsumerRecord, FrameRejectedError]]
    decoding: Callable[[], list[DecodedFrame | FrameRejectedError]]


@dataclass
class _Inferred:
    """A batch past the engine: what the delivery thread turns into stored verdicts."""

    records: list[ConsumerRecord]
    engines: Mapping[str, ScoringEngine]
    outputs: dict[str, list[Scored]]  # per product
    frames: dict[uuid.UUID, DecodedFrame]
    rejected: list[tuple[ConsumerRecord, FrameRejectedError]]
    events: list[dict] = field(default_factory=list)  # extra verdicts-topic messages


@dataclass
class _InFlight:
    records: list[ConsumerRecord]
    delivered: Future[bool]


class InferenceWorker:
    """Two stages: this thread polls, decodes (pool) and infers batch N+1 while one
    delivery thread builds heatmaps/regions for batch N and stores and publishes it.
    Offsets are committed here, in batch order, only once a batch's delivery is done;
    at most one batch is in delivery. A crash redelivers what was not committed yet
    (the batch in delivery, the one being inferred, the prefetched one)."""

    def __init__(self, settings: Settings, engines: Mapping[str, ScoringEngine], *,
                 consumer: KafkaConsumer, producer: KafkaProducer,
                 session_factory: sessionmaker[Session], cache: RegionCache,
                 metrics: WorkerMetrics | None = None, stop: threading.Event | None = None,
                 between_batches: Callable[[InferenceWorker], None] | None = None,
                 liveness: Liveness | None = None) -> None:
        self.settings = settings
        self.engines = dict(engines)  # swapped whole between batches (hot reload)
        self.consumer, self.producer = consumer, producer
        # Every poll goes through this: an unparseable record goes to the DLQ, not up.
        self.records = PastUnreadable(consumer, self._dead_letter_unreadable)
        self.session_factory, self.cache = session_factory, cache
        self.metrics = metrics or WorkerMetrics()
        self.stop = stop or threading.Event()
        self.between_batches = between_batches or (lambda _w: None)
        self.pool = ThreadPoolExecutor(settings.worker.decode_threads,
                                       thread_name_prefix="decode")
        self.delivery = ThreadPoolExecutor(1, thread_name_prefix="deliver")
        self.in_flight: _InFlight | None = None
        self.liveness = liveness or Liveness(settings.worker.stall_after_s)

        def on_retry(name: str) -> None:  # a chosen wait on an outage: progress, not a hang
            self.metrics.retries.labels(name).inc()
            self.liveness.beat()

        # The consumer is not thread-safe: only this thread's retrier keeps the group
        # membership alive; the delivery thread's waits are covered by _settle.
        self.retrier = Retrier(self.stop, max_backoff_s=settings.worker.max_backoff_s,
                               on_retry=on_retry, while_waiting=self._keep_membership)
        self.delivery_retrier = Retrier(self.stop, max_backoff_s=settings.worker.max_backoff_s,
                                        on_retry=on_retry)
        self.batches = 0
        self._drifting: set[str] = set()  # products whose context_drift event is out

    def run(self) -> None:
        """Until stop is set; then the in-flight batch is finished and committed, and the
        consumer closed (see close() for how it leaves the group)."""
        ws = self.settings.worker
        self.consumer.subscribe([self.settings.kafka.topic_frames])
        log.info("worker consuming %s as group %s (batch %s, max wait %s ms)",
                 self.settings.kafka.topic_frames, self.settings.kafka.consumer_group,
                 ws.batch_size, ws.max_wait_ms)
        following: _Prepared | None = None
        try:
            while not self.stop.is_set():
                self.liveness.beat()
                if self.in_flight is not None and self.in_flight.delivered.done():
                    self._settle()
                current, following = following, None
                if current is None:
                    with self.metrics.stage_seconds.labels("poll").time():
                        records = collect_batch(self.records, batch_size=ws.batch_size,
                                                max_wait_ms=ws.max_wait_ms)
                    current = self._prepare(records) if records else None
                elif current.engines is not self.engines:  # a reload since it was decoded
                    current = self._prepare(current.records)
                if current is not None:
                    # Decode what the consumer already holds (no wait) while this batch
                    # is inferred: OpenCV works beside the engine instead of before it.
                    polled = self.records.poll(timeout_ms=0, max_records=ws.batch_size)
                    more = [r for rs in polled.values() for r in rs]
                    following = self._prepare(more) if more else None
                    self._hand_off(self._infer(current))
                else:
                    self._settle()  # an idle line: commit the last batch now
                self.between_batches(self)
            self._settle()  # stop: the batch in delivery is finished and committed
        finally:
            self.close()  # a prefetched batch was never committed: it is redelivered

    def close(self) -> None:
        # Leaving run() on an error with a delivery retrying against a dead database
        # must not hang here: a set stop makes that delivery give up, uncommitted.
        self.stop.set()
        self.delivery.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        try:
            self.producer.flush(timeout=10)
        except KafkaError as exc:
            log.warning("producer flush at close failed: %s", exc)
        self.producer.close(timeout=10)
        if not self.settings.kafka.leave_group_on_close:
            # Forget the membership so close() sends no LeaveGroup: the broker evicts this
            # member after session_timeout_ms instead. The bundled broker (Tansu) keeps a
            # leader that leaves by LeaveGroup while the group is re-forming as the leader
            # of every later generation: no member ever gets a partition again (a worker
            # stopped during a rebalance froze the group for good in
            # tests/integration/test_pipeline_rebalance.py). Eviction by timeout clears
            # that leader. kafka-python (pinned) has no public switch for this.
            self.consumer._coordinator.reset_generation()  # noqa: SLF001
        self.consumer.close(autocommit=False)
        log.info("worker stopped after %s batches", self.batches)

    def process(self, records: list[ConsumerRecord]) -> bool:
        """Handle one batch to the end; True when its offsets were committed."""
        self._hand_off(self._infer(self._prepare(records)))
        return self._settle()

    def _prepare(self, records: list[ConsumerRecord]) -> _Prepared:
        """Validate and start decoding in the pool; returns at once."""
        engines = self.engines
        accepted, rejected = self._validate(records, engines)
        decoding = start_decode(self.pool, [(env, engines[env.header.product].input_size)
                                            for _r, env in accepted])
        return _Prepared(records, engines, accepted, rejected, decoding)

    def _infer(self, batch: _Prepared) -> _Inferred:
        records, engines, accepted, rejected = (batch.records, batch.engines, batch.accepted,
                                                list(batch.rejected))
        self.metrics.frames.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        with self.metrics.stage_seconds.labels("decode").time():  # what is left to wait for
            decoded_or_error = batch.decoding()
        decoded: dict[str, list[tuple[ConsumerRecord, DecodedFrame]]] = {}
        for (record, _env), item in zip(accepted, decoded_or_error, strict=True):
            if isinstance(item, FrameRejectedError):
                rejected.append((record, item))
            else:
                decoded.setdefault(item.envelope.header.product, []).append((record, item))
        outputs: dict[str, list[Scored]] = {}
        with self.metrics.stage_seconds.labels("infer").time():
            for product, items in decoded.items():
                outputs[product], failed = infer_product(
                    engines[product], items, chunk=self.settings.worker.batch_size)
                rejected.extend(failed)
                self.metrics.record_context(product, engines[product])
        frames = {item.envelope.header.frame_id: item
                  for items in decoded.values() for _r, item in items}
        events = [e for product in decoded if (e := self._drift_event(product, engines[product]))]
        return _Inferred(records, engines, outputs, frames, rejected, events)

    def _drift_event(self, product: str, engine: ScoringEngine) -> dict | None:
        """One event when a product's context drift reaches the alert share; re-armed
        once it has fallen below half of it."""
        line = getattr(engine, "line_context", None)
        if line is None:
            return None
        alert = self.settings.context.line_context_drift_alert
        if line.drift >= alert and product not in self._drifting:
            self._drifting.add(product)
            log.warning("product %s: %.0f%% of recent frames above the context cut",
                        product, 100 * line.drift)
            return drift_event(product, line.drift, engine.version, now_utc())
        if line.drift < alert / 2:
            self._drifting.discard(product)
        return None

    def _hand_off(self, batch: _Inferred) -> None:
        """Batch N goes to the delivery thread once batch N-1 is delivered and committed."""
        self._settle()
        self.in_flight = _InFlight(batch.records, self.delivery.submit(self._deliver_batch,
                                                                        batch))

    def _settle(self) -> bool:
        """Wait for the batch in delivery (keeping the group membership), then commit its
        offsets; True when committed. An error in delivery is raised here."""
        flight, self.in_flight = self.in_flight, None
        if flight is None:
            return False
        while True:
            try:
                delivered = flight.delivered.result(timeout=1.0)
                break
            except FutureTimeout:  # an outage being retried over there
                self._keep_membership()
        if not delivered:  # stopped before its verdicts were durable: redelivered later
            return False
        with self.metrics.stage_seconds.labels("commit").time():
            committed = self._commit(flight.records)
            self._record_lag()
        self.batches += 1
        return committed

    def _deliver_batch(self, batch: _Inferred) -> bool:
        """Delivery thread: heatmaps and regions, descriptions, ONE DB transaction,
        verdict events and DLQ records, the cache; False = stopped before durable."""
        started = time.perf_counter()
        rejected = list(batch.rejected)
        verdicts: list[VerdictRecord] = []
        with self.metrics.stage_seconds.labels("heatmaps").time():
            for product, outputs in batch.outputs.items():
                made, failed = to_verdicts_isolated(
                    batch.engines[product], outputs, pool=self.pool,
                    min_area=self.settings.model.min_region_area_px)
                verdicts.extend(made)
                rejected.extend(failed)
        with self.metrics.stage_seconds.labels("describe").time():
            try:
                described = describe_batch(batch.engines, verdicts, batch.frames, self.cache,
                                           self.settings.camera.camera_mm_per_px)
            except Exception:  # noqa: BLE001 - a description is never worth a frame
                log.exception("describing a batch of %s verdicts failed; stored without "
                              "descriptions", len(verdicts))
                described = DescribedBatch(verdicts)
        originals = {fid: (f.envelope.image, f.envelope.header.content_type)
                     for fid, f in batch.frames.items()}
        records = {f.envelope.header.frame_id: r
                   for outputs in batch.outputs.values() for r, f, _s, _m in outputs}
        verdicts = self._deliver(described.verdicts, rejected, originals, batch.events,
                                 records)
        if verdicts is None:
            return False
        decided_at = now_utc()
        # One cache round trip per batch: new descriptions, region masks, latest verdicts.
        with self.metrics.stage_seconds.labels("cache").time():
            self.cache.store_batch(descriptions=described.fresh, masks_by_frame={
                str(v.frame_id): [{"index": r.index, "bbox": list(r.bbox),
                                   "mask_rle": r.mask_rle, "area": r.area,
                                   "description": r.description}
                                  for r in v.regions] for v in verdicts},
                latest_by_camera={
                    v.camera_id: {"frame_id": str(v.frame_id), "score": v.score,
                                  "label": v.label, "decided_at": decided_at.isoformat()}
                    for v in verdicts})
        for v in verdicts:
            self.metrics.frame_latency.observe(
                max(0.0, (decided_at - v.captured_at).total_seconds()))
            if v.label == "anomalous":
                self.metrics.anomalies.labels(v.camera_id).inc()
        for _record, error in rejected:
            self.metrics.dlq.labels(error.reason.value).inc()
        log.debug("batch of %s: %s verdicts, %s rejected, delivered in %.1f ms",
                  len(batch.records), len(verdicts), len(rejected),
                  (time.perf_counter() - started) * 1000)
        return True

    def _validate(self, records: list[ConsumerRecord], engines: Mapping[str, ScoringEngine]
                  ) -> tuple[list[tuple[ConsumerRecord, FrameEnvelope]],
                             list[tuple[ConsumerRecord, FrameRejectedError]]]:
        accepted, rejected = [], []
        for record in records:
            outcome = guarded(partial(self._accept, record, engines), what="validation")
            if isinstance(outcome, FrameRejectedError):
                rejected.append((record, outcome))
            else:
                accepted.append((record, outcome))
        return accepted, rejected

    def _accept(self, record: ConsumerRecord, engines: Mapping[str, ScoringEngine]
                ) -> FrameEnvelope:
        envelope = parse_frame(record.headers, record.value,
                               max_frame_bytes=self.settings.kafka.max_frame_bytes,
                               max_frame_pixels=self.settings.kafka.max_frame_pixels)
        if envelope.header.product not in engines:
            raise FrameRejectedError(
                RejectReason.UNKNOWN_PRODUCT,
                f"no model for product {envelope.header.product!r}; serving {sorted(engines)}")
        return envelope

    def _deliver(self, verdicts: list[VerdictRecord],
                 rejected: list[tuple[ConsumerRecord, FrameRejectedError]],
                 originals: dict[uuid.UUID, tuple[bytes, str]],
                 events: list[dict], records: Mapping[uuid.UUID, ConsumerRecord]
                 ) -> list[VerdictRecord] | None:
        """Verdicts durable, then events and DLQ records acknowledged; returns the verdicts
        stored, None = stopped first. A verdict the database refuses alone goes to the DLQ
        (`rejected` grows by it) with the record it came from."""
        kafka = self.settings.kafka
        with self.metrics.stage_seconds.labels("write").time():
            try:
                new, refused = store_isolated(self.delivery_retrier, self.session_factory,
                                              verdicts, originals, self.settings.api)
            except DeliveryStoppedError:
                return None
        if refused:
            gone = {v.frame_id for v, _e in refused}
            verdicts = [v for v in verdicts if v.frame_id not in gone]
            rejected.extend((records[v.frame_id], e) for v, e in refused)
        self.metrics.verdicts.inc(new)
        decided_at = now_utc()
        messages = [(kafka.topic_verdicts, verdict_event(v, decided_at)) for v in verdicts]
        messages += [(kafka.topic_verdicts, e) for e in events]
        messages += [(kafka.topic_dlq, dlq_message(r, e, max_value=kafka.max_frame_bytes))
                     for r, e in rejected]
        for record, error in rejected:
            log.warning("frame %s/%s/%s to DLQ: %s", record.topic, record.partition,
                        record.offset, error)
        with self.metrics.stage_seconds.labels("publish").time():
            ok, _ = self.delivery_retrier.call(
                "kafka publish", lambda: send_all(self.producer, messages),
                (KafkaSendError, KafkaError))
        return verdicts if ok else None

    def _commit(self, records: list[ConsumerRecord]) -> bool:
        """Commit a delivered batch's offsets; False when the group took them away.

        A commit refused because the group is rebalancing (or already rebalanced, or
        fenced this member's generation) is given up, never retried here: only the
        next poll() completes the rejoin, and retrying before it livelocks the whole
        group (every member waits for this one). The batch is already stored
        idempotently, so whoever owns the partition next redoes it harmlessly.
        Transient broker errors are retried a bounded number of times.
        """
        assigned = self.consumer.assignment()
        # Partitions revoked meanwhile belong to another worker now; it redoes them (idempotent).
        offsets = {tp: om for tp, om in next_offsets(records).items() if tp in assigned}
        if not offsets:
            return False
        attempts = 0

        def commit() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                self.consumer.commit(offsets)
                return True
            except MEMBERSHIP_ERRORS as exc:
                log.warning("offset commit given up, the group is rebalancing (%s): "
                            "back to polling; these frames may be redone, idempotently",
                            type(exc).__name__)
                self.metrics.commits_abandoned.inc()
                return False
            except KafkaError:
                if attempts >= self.settings.worker.commit_attempts:
                    log.warning("offset commit failed %s times: given up, back to "
                                "polling", attempts)
                    self.metrics.commits_abandoned.inc()
                    return False
                raise

        ok, committed = self.retrier.call("offset commit", commit, (KafkaError,))
        return ok and bool(committed)

    def _dead_letter_unreadable(self, record: UnreadableRecord) -> bool:
        """Published (acknowledged) before the consumer steps past the record; False when
        stopped first. This thread's retrier: it keeps the group membership while it waits."""
        message = dlq_unreadable_message(record)
        ok, _ = self.retrier.call(
            "kafka publish", lambda: send_all(self.producer,
                                              [(self.settings.kafka.topic_dlq, message)]),
            (KafkaSendError, KafkaError))
        if ok:
            self.metrics.dlq.labels(RejectReason.UNREADABLE.value).inc()
        return ok

    def _record_lag(self) -> None:
        """clad_consumer_lag per partition: high watermark - position, after each batch.

        The high watermark comes with every fetch response (`consumer.highwater`), so
        the gauge costs no broker round trip; end_offsets() did, and under load that
        round trip took ~70 ms per batch. Partitions not fetched yet are left out.
        """
        try:
            for tp in self.consumer.assignment():
                end, position = self.consumer.highwater(tp), self.consumer.position(tp)
                if end is not None and position is not None:
                    self.metrics.lag.labels(str(tp.partition)).set(max(0, end - position))
        except (KafkaError, AssertionError) as exc:  # a metric never stops scoring
            log.debug("consumer lag not updated: %s", exc)

    def _keep_membership(self) -> None:
        # While a dependency is down, poll with every partition paused so the group
        # does not evict this worker (max.poll.interval) and hand its frames around.
        # A non-zero timeout lets a rebalance that starts meanwhile finish its join and
        # sync here: with timeout 0 the rejoin never completes and the whole group waits.
        try:
            self.consumer.pause(*self.consumer.assignment())
            polled = self.records.poll(timeout_ms=self.settings.worker.membership_poll_ms)
            # A partition assigned during this poll is not paused and may return records:
            # seek back so they are fetched again, never skipped past uncommitted.
            for tp, records in polled.items():
                if records:
                    self.consumer.seek(tp, min(r.offset for r in records))
        except KafkaError as exc:
            log.debug("keep-alive poll failed: %s", exc)
        finally:
            self.consumer.resume(*self.consumer.assignment())
