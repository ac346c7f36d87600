"""Several inference requests in flight on a CPU, results still in submission order.

One request with all cores leaves them idle in the graph's serial parts (small
depthwise convs, the bank search's reductions, top-k), which is why issue 17 asked for
this; on a quiet 2-core host it bought nothing (x1.05 at batch 8, x0.55 at batch 1:
engine/runtime/NOTES.md), so the default is one request per 4 cores. A `RequestPool`
holds N runners (onnxruntime sessions, OpenVINO infer requests), splits each batch into
at most N consecutive parts, runs them at once on N threads (both runtimes release the
GIL) and joins the outputs in frame order. `submit` returns at once, so
`protocol.pipelined` can also keep the next batch going.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.runtime.protocol import check_frames, infer_chunked

Arrays = tuple[np.ndarray, ...]
Runner = Callable[[np.ndarray], Arrays]
CORES_PER_DEFAULT_REQUEST = 4
MAX_DEFAULT_REQUESTS = 4  # beyond this each request's batch part gets too small to pay


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_requests(cores: int) -> int:
    """N requests in flight when the settings give none: one per 4 cores, at most 4.

    On 2 cores with nothing else running, 2 one-thread requests were 0.55x one 2-thread
    session at batch 1 and level at batch 8 (bench.engine, 2026-11-30): a batch split in
    two leaves a request idle at batch 1, and one session already keeps 2 cores busy.
    Many-core hosts, where one session's intra-op threads stop scaling, get several;
    that part was not measured here."""
    return max(1, min(MAX_DEFAULT_REQUESTS, cores // CORES_PER_DEFAULT_REQUEST))


def threads_per_request(cores: int, requests: int) -> int:
    """Intra-op threads of each request so that N requests together use the cores."""
    return max(1, cores // max(1, requests))


def split_batch(frames: np.ndarray, parts: int) -> list[np.ndarray]:
    """At most `parts` consecutive, non-empty slices (views) covering `frames`."""
    n = frames.shape[0]
    parts = max(1, min(parts, n))
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def join_outputs(parts: Sequence[Arrays]) -> Arrays:
    """Outputs of consecutive parts -> outputs of the whole batch (axis 0)."""
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


class PendingBatch:
    """A submitted batch; `wait()` blocks until all its parts are done, then joins them."""

    def __init__(self, futures: list[Future[Arrays]]) -> None:
        self._futures = futures
        self._result: Arrays | None = None

    def wait(self) -> Arrays:
        if self._result is None:
            self._result = join_outputs([f.result() for f in self._futures])
        return self._result


class RequestPool:
    """N runners, each used by one thread at a time; batches split over them in order."""

    def __init__(self, runners: Sequence[Runner], name: str = "infer") -> None:
        if not runners:
            raise ValueError("a request pool needs at least one runner")
        self.requests = len(runners)
        self._idle: queue.SimpleQueue[Runner] = queue.SimpleQueue()
        for runner in runners:
            self._idle.put(runner)
        # as many threads as runners: a task never waits for a runner to come back
        self._threads = ThreadPoolExecutor(self.requests, thread_name_prefix=name)
        # The pool's first call runs alone. Two first calls at once deadlocked OpenVINO's
        # bindings for good (tests/integration/test_backend_parity.py hung in CI): both
        # threads entered the lazy one-time set-up of pybind11's numpy API (a static
        # guard in one, a call_once waiting for the GIL in the other). After one call
        # that set-up is done, and the runners overlap as intended.
        self._first_call = threading.Lock()
        self._warm = threading.Event()

    def _run(self, part: np.ndarray) -> Arrays:
        runner = self._idle.get()
        try:
            if self._warm.is_set():
                return runner(part)
            with self._first_call:
                out = runner(part)
                self._warm.set()
                return out
        finally:
            self._idle.put(runner)

    def submit(self, frames: np.ndarray) -> PendingBatch:
        """Start `frames` (split into at most N parts) and return at once."""
        parts = split_batch(frames, self.requests)
        return PendingBatch([self._threads.submit(self._run, p) for p in parts])

    def run(self, frames: np.ndarray) -> Arrays:
        if self.requests == 1:  # no hand-over to a thread when there is nothing to overlap
            return self._run(frames)
        return self.submit(frames).wait()

    def close(self) -> None:
        self._threads.shutdown(wait=True)


class PooledBackend:
    """infer / submit / close of a CPU backend whose batches run on a RequestPool; the
    backend sets `_pool`, `frame_size` and `max_batch`."""

    _pool: RequestPool
    frame_size: tuple[int, int]
    max_batch: int

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._pool.run(frames)  # type: ignore[return-value]

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return infer_chunked(self._run, check_frames(frames, self.frame_size), self.max_batch)

    def submit(self, frames: np.ndarray) -> PendingBatch:
        """Start a batch of at most `max_batch` frames and return at once (pipelined())."""
        frames = check_frames(frames, self.frame_size)
        if frames.shape[0] > self.max_batch:
            raise ValueError(f"batch of {frames.shape[0]} > max batch {self.max_batch}; "
                             "use infer()")  # fmt: skip
        return self._pool.submit(frames)

    def close(self) -> None:
        self._pool.close()
