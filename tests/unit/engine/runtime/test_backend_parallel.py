"""Several inference requests in flight (engine.runtime.parallel): order, runner use,
and onnxruntime with N sessions scoring like one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.runtime import make_backend, pipelined
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend
from engine.runtime.parallel import (
    RequestPool,
    default_requests,
    join_outputs,
    split_batch,
    threads_per_request,
)

pytestmark = pytest.mark.unit
SIZE = 64


@pytest.mark.parametrize(("n", "parts"), [(1, 3), (2, 2), (5, 2), (7, 3), (8, 4), (3, 8)])
def test_split_batch_covers_in_order(n: int, parts: int) -> None:
    frames = np.arange(n)[:, None]
    got = split_batch(frames, parts)
    assert len(got) == min(n, parts) and all(len(p) > 0 for p in got)
    assert np.concatenate(got)[:, 0].tolist() == list(range(n))
    assert max(map(len, got)) - min(map(len, got)) <= 1  # balanced


def test_default_requests_and_threads_follow_the_cores() -> None:
    assert [default_requests(c) for c in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 1, 2, 4, 4]
    assert threads_per_request(2, 2) == 1 and threads_per_request(16, 4) == 4
    assert threads_per_request(1, 4) == 1


def test_join_outputs_concatenates_every_output() -> None:
    a = (np.array([1.0]), np.zeros((1, 2)))
    b = (np.array([2.0, 3.0]), np.ones((2, 2)))
    scores, maps = join_outputs([a, b])
    assert scores.tolist() == [1.0, 2.0, 3.0] and maps.shape == (3, 2)


def test_pool_returns_parts_in_order_even_when_they_finish_out_of_order() -> None:
    """The first part's runner waits until the second part has finished."""
    second_done = threading.Event()
    finished: list[int] = []

    def runner(frames: np.ndarray) -> tuple[np.ndarray, ...]:
        if frames[0, 0] == 0:
            assert second_done.wait(10), "the parts did not run at once"
        finished.append(int(frames[0, 0]))
        if frames[0, 0] != 0:
            second_done.set()
        return (frames[:, 0] * 10,)

    pool = RequestPool([runner, runner])
    try:
        pool.run(np.full((1, 1), 5))  # the pool's first call runs alone (next test)
        finished.clear()
        second_done.clear()
        (out,) = pool.run(np.arange(4)[:, None])
    finally:
        pool.close()
    assert finished == [2, 0]  # the second part ended first
    assert out.tolist() == [0, 10, 20, 30]


def test_the_pools_first_call_runs_alone_and_later_ones_overlap() -> None:
    """Two first calls at once deadlocked OpenVINO's bindings (parallel.RequestPool):
    the first batch's parts run one after the other, the next batches' parts at once."""
    lock = threading.Lock()
    active, most = [0], [0]
    both_in = threading.Barrier(2, timeout=10)

    def runner(frames: np.ndarray) -> tuple[np.ndarray, ...]:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            if frames[0, 0] >= 100:  # a later batch: both parts must be in here together
                both_in.wait()
            else:
                threading.Event().wait(0.05)
        finally:
            with lock:
                active[0] -= 1
        return (frames[:, 0].astype(np.float32),)

    pool = RequestPool([runner, runner])
    try:
        (first,) = pool.run(np.arange(2)[:, None])
        assert most[0] == 1  # the two parts of the first batch never overlapped
        (later,) = pool.run(np.arange(100, 102)[:, None])  # BrokenBarrierError if serial
    finally:
        pool.close()
    assert most[0] == 2
    assert first.tolist() == [0.0, 1.0] and later.tolist() == [100.0, 101.0]


def test_each_runner_serves_one_part_at_a_time() -> None:
    """An onnxruntime session or OpenVINO request must never be entered twice at once."""
    busy: set[int] = set()
    lock = threading.Lock()
    overlaps: list[int] = []

    def make(i: int):  # noqa: ANN202
        def run(frames: np.ndarray) -> tuple[np.ndarray, ...]:
            with lock:
                if i in busy:
                    overlaps.append(i)
                busy.add(i)
            threading.Event().wait(0.002)
            with lock:
                busy.discard(i)
            return (frames[:, 0].astype(np.float32),)

        return run

    pool = RequestPool([make(0), make(1)])
    try:
        handles = [pool.submit(np.full((3, 1), k)) for k in range(20)]
        outs = [h.wait()[0] for h in handles]
    finally:
        pool.close()
    assert overlaps == []
    assert [o.tolist() for o in outs] == [[float(k)] * 3 for k in range(20)]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (7, SIZE, SIZE, 3), dtype=np.uint8)


def test_onnxruntime_sessions_in_flight_score_like_one(
    runtime: torch.nn.Module, frames: np.ndarray
) -> None:
    one = make_backend("onnxruntime", runtime, requests=1, intra_op_threads=2, max_batch=4)
    three = make_backend("onnxruntime", runtime, requests=3, intra_op_threads=1, max_batch=4)
    assert isinstance(three, OnnxRuntimeBackend) and three.requests == 3
    assert len({id(s) for s in three.sessions}) == 3
    with torch.no_grad():
        ref = runtime(torch.from_numpy(frames))
    for backend in (one, three):
        scores, maps = backend.infer(frames)  # chunks 4 + 3, each split over the sessions
        np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(three.infer(frames)[0], one.infer(frames)[0], rtol=0, atol=1e-5)
    # batches submitted back to back (pipelined) come back in their order
    got = list(pipelined(three, iter([frames[:4], frames[4:5], frames[5:]])))
    assert [len(s) for s, _ in got] == [4, 1, 2]
    np.testing.assert_allclose(np.concatenate([s for s, _ in got]), ref.scores.numpy(),
                               rtol=0, atol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="max batch"):
        three.submit(np.concatenate([frames, frames]))


@pytest.mark.parametrize(
    ("cores", "requests", "threads", "want"),
    [(2, None, None, (1, 2)), (4, None, None, (1, 4)), (8, None, None, (2, 4)),
     (4, None, 2, (2, 2)), (2, None, 2, (1, 2)), (4, 3, None, (3, 1)), (4, 1, 3, (1, 3))],
)  # fmt: skip
def test_requests_and_threads_chosen_by_make_backend(
    monkeypatch: pytest.MonkeyPatch, runtime: torch.nn.Module, cores: int,
    requests: int | None, threads: int | None, want: tuple[int, int],
) -> None:  # fmt: skip
    monkeypatch.setattr("engine.runtime.select.cpu_cores", lambda: cores)
    made: list[tuple[int, int]] = []

    class Recorder:
        def __init__(self, _model: object, _device: str, t: int, _mb: int, n: int) -> None:
            made.append((n, t))

    monkeypatch.setattr("engine.runtime.onnxruntime_backend.OnnxRuntimeBackend", Recorder)
    make_backend("onnxruntime", runtime, requests=requests, intra_op_threads=threads)
    assert made == [want]
