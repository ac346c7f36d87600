"""engine.scoring.line_context: bounded admission-guarded context, mutual scoring, defect burst."""

import math

import numpy as np
import pytest
import torch

from engine.scoring.line_context import (
    ContextConfig,
    Embeddings,
    LineContext,
    context_distances,
    fuse,
    per_frame_distances,
    pick_frames,
    reduce_context,
    score_with_context,
)
from engine.scoring.runtime_model import CladRuntime
from tests.line_context_support import stripe_frame, stripe_runtime

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runtime() -> CladRuntime:
    return stripe_runtime()


def _run(rt: CladRuntime, line: LineContext[Embeddings], frames: list[np.ndarray],
         t0: int = 0, batch: int = 10, admitted: list[bool] | None = None
         ) -> list[float]:  # fmt: skip
    scores: list[float] = []
    admitted = [] if admitted is None else admitted
    for i in range(0, len(frames), batch):
        now = float(t0 + i)
        x = torch.from_numpy(np.stack(frames[i : i + batch]))
        out, embs, reference = score_with_context(rt, x, line.items(now), line.cfg)
        for s, r, e in zip(out.scores.tolist(), reference.tolist(), embs, strict=True):
            admitted.append(line.offer(e, r, now))
            scores.append(s)
    return scores


def test_reduce_and_fuse_numbers() -> None:
    d = torch.tensor([[[0.1, 0.9], [0.3, 0.5], [0.2, 0.7], [0.4, 0.6]]])  # [1, M=4, P=2]
    # share 0.5 of 4 frames -> mean of the 2 smallest per patch
    torch.testing.assert_close(reduce_context(d, 0.5), torch.tensor([[0.15, 0.55]]))
    ref, ctx = torch.tensor([1.0, 0.2]), torch.tensor([0.1, 0.5])
    torch.testing.assert_close(fuse(ref, ctx, 0.0), torch.tensor([0.1, 0.2]))
    torch.testing.assert_close(fuse(ref, ctx, 0.5), torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(fuse(None, ctx, 0.5), ctx)
    with pytest.raises(ValueError, match="nothing to score"):
        fuse(None, None, 0.0)


def test_reduce_over_a_searched_subset_keeps_the_share_of_all_frames() -> None:
    d = torch.tensor([[[0.1, 0.9], [0.3, 0.5]]])  # [1, M=2 searched, P=2]
    # 2 of 8 context frames searched, share 0.25 of 8 -> the 2 smallest of those searched
    torch.testing.assert_close(reduce_context(d, 0.25, of_frames=8), torch.tensor([[0.2, 0.7]]))
    # share x all frames above the searched count: all of them
    torch.testing.assert_close(reduce_context(d, 0.5, of_frames=8), torch.tensor([[0.2, 0.7]]))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def test_search_frames_picks_the_frames_most_like_each_query() -> None:
    gen = torch.Generator().manual_seed(0)
    look_a, look_b = torch.randn(8, 1, 1, generator=gen), torch.randn(8, 1, 1, generator=gen)
    # 6 context frames that look like A (the query's look), 6 unlike it, interleaved
    frames = [_unit(look + 0.3 * torch.randn(8, 4, 4, generator=gen)) for _ in range(6)
              for look in (look_a, look_b)]  # fmt: skip
    ctx = torch.stack(frames)
    query = _unit(look_a + 0.3 * torch.randn(1, 8, 4, 4, generator=gen))
    cfg = ContextConfig(search_frames=6, share=0.25)
    picks = pick_frames(query, ctx, cfg)
    assert picks is not None
    assert sorted(picks[0].tolist()) == [0, 2, 4, 6, 8, 10]  # the six A frames
    # the 3 (= 0.25 x 12) smallest per patch come from the A frames: the same numbers
    full = reduce_context(per_frame_distances(query, ctx), cfg.share)
    torch.testing.assert_close(context_distances(query, ctx, cfg, picks), full)
    # a search of every frame is the plain reduction; so is a context under the bound
    assert pick_frames(query, ctx, cfg.model_copy(update={"search_frames": 0})) is None
    assert pick_frames(query, ctx[:6], cfg) is None
    torch.testing.assert_close(context_distances(query, ctx, cfg, None), full)


def test_searching_half_the_frames_still_vouches_for_normal_frames(runtime: CladRuntime) -> None:
    line: LineContext[Embeddings] = LineContext(ContextConfig())
    _run(runtime, line, [stripe_frame(s) for s in range(10, 50)])
    x = torch.from_numpy(np.stack([stripe_frame(99), stripe_frame(98, defect=True)]))
    items = line.items(50.0)
    assert len(items) > 8
    full, _e, reference = score_with_context(runtime, x, items, line.cfg)
    half, _e, _r = score_with_context(runtime, x, items, line.cfg.model_copy(
        update={"search_frames": len(items) // 2}))  # fmt: skip
    assert half.scores[1] > 2 * half.scores[0]  # the blob stays anomalous
    # the line still vouches for the normal frame, if a little less than with every frame
    # (the stripes' phase is not in a mean-pooled descriptor: 0.43 all, 0.49 half, 0.64 none)
    assert full.scores[0] <= half.scores[0] < reference[0]


def test_too_little_context_equals_the_plain_runtime(runtime: CladRuntime) -> None:
    x = torch.from_numpy(np.stack([stripe_frame(1), stripe_frame(2, defect=True)]))
    _f, embs, _r = score_with_context(runtime, x, [], ContextConfig())
    out, _e, reference = score_with_context(runtime, x, embs, ContextConfig(min_frames=3))
    with torch.no_grad():
        plain = runtime(x)
    torch.testing.assert_close(out.scores, plain.scores)
    torch.testing.assert_close(out.maps, plain.maps)
    torch.testing.assert_close(reference, plain.scores)


def test_context_lowers_normal_variation_not_the_defect(runtime: CladRuntime) -> None:
    line: LineContext[Embeddings] = LineContext(ContextConfig())
    _run(runtime, line, [stripe_frame(s) for s in range(10, 40)])
    x = torch.from_numpy(np.stack([stripe_frame(99), stripe_frame(98, defect=True)]))
    with_ctx, _e, reference = score_with_context(runtime, x, line.items(40.0), line.cfg)
    with torch.no_grad():
        plain = runtime(x)
    torch.testing.assert_close(reference, plain.scores)  # the admission score
    assert with_ctx.scores[0] < plain.scores[0]  # unseen phase: vouched for by the line
    assert with_ctx.scores[1] > 2 * with_ctx.scores[0]  # the blob stays anomalous


def test_only_the_lower_share_of_recent_scores_is_admitted() -> None:
    line: LineContext[int] = LineContext(ContextConfig(admit_quantile=0.5))
    for i, s in enumerate((5.0, 1.0, 6.0, 2.0, 7.0, 1.5)):
        line.offer(i, s, now=0.0)
    # each frame against the median of the scores so far (itself included)
    assert line.items(now=0.0) == [0, 1, 3, 5]
    assert line.drift == 0.0  # under the threshold (inf): nothing counts as drift


def test_bounded_in_frames_and_age() -> None:
    line: LineContext[int] = LineContext(ContextConfig(max_frames=5, max_age_s=10.0))
    for t in range(8):
        assert line.offer(t, 1.0, now=float(t))
    assert line.items(now=7.0) == [3, 4, 5, 6, 7]
    assert line.items(now=15.5) == [6, 7]  # 3, 4, 5 are older than 10 s
    line.clear()
    assert len(line) == 0 and line.drift == 0.0


def test_admission_cut_threshold_then_robust() -> None:
    line: LineContext[int] = LineContext(ContextConfig(warmup=4, admit_mad=3.0), threshold=2.0)
    assert not line.offer(0, 2.5, now=0.0)  # above the threshold from the start
    for i, s in enumerate((1.0, 1.1, 0.9, 1.0)):
        assert line.offer(i + 1, s, now=0.0)
    # median 1.0, MAD 0.05 -> cut 1.15 after warm-up, under the threshold
    assert line.cut() == pytest.approx(1.15)
    assert not line.offer(9, 1.5, now=0.0)
    assert line.items(now=0.0) == [1, 2, 3, 4]


def _burst(rt: CladRuntime, cfg: ContextConfig) -> tuple[list[float], list[float], list[float],
                                                          list[bool]]:
    line: LineContext[Embeddings] = LineContext(cfg)
    normal = _run(rt, line, [stripe_frame(100 + s) for s in range(100)])
    drift_before = line.drift
    admitted: list[bool] = []
    burst = _run(rt, line, [stripe_frame(300 + s, defect=True) for s in range(30)], t0=100,
                 admitted=admitted)  # fmt: skip
    return normal, burst, [drift_before, line.drift], admitted


def test_defect_burst_is_not_learnt_and_raises_drift(runtime: CladRuntime) -> None:
    """30 consecutive frames of one defect after 100 normal ones: scores stay high."""
    normal, burst, (drift_before, drift_after), admitted = _burst(runtime, ContextConfig())
    assert min(burst) > max(normal[50:])  # every defect frame above every late normal
    assert burst[-1] >= 0.8 * burst[0]  # the 30th defect is scored as high as the 1st
    assert drift_before <= 0.1 and drift_after >= 0.5
    assert not any(admitted)  # none of the burst entered the context

    # the guard is what holds it: admitting everything teaches the context the defect
    _n, unguarded, _d, _l = _burst(runtime, ContextConfig(admit_mad=math.inf, admit_quantile=1.0))
    assert unguarded[-1] < 0.8 * unguarded[0]
    assert unguarded[-1] < burst[-1]
