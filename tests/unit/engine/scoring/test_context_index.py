"""engine.scoring.line_context.ContextIndex and the lead (issue 33): the kept, batched search
gives the per-frame einsum's numbers; admission and eviction keep it equal to a rebuild; the
lead spares frames without changing a verdict."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.scoring.line_context import (
    ContextConfig,
    ContextIndex,
    Embeddings,
    LineContext,
    context_distances,
    embed,
    pick_frames,
    score_and_offer,
    score_searched,
    score_with_context,
)
from engine.scoring.runtime_model import CladRuntime
from tests.line_context_support import stripe_frame, stripe_runtime

pytestmark = pytest.mark.unit
BOTTLE = Path(__file__).resolve().parents[5] / "shared" / "data" / "mvtec-sample" / "bottle"


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _random_frames(gen: torch.Generator, n: int, split: bool) -> list[Embeddings]:
    out = []
    for _ in range(n):
        look = torch.randn(16, 1, 1, generator=gen)
        image = _unit(look + 0.5 * torch.randn(16, 5, 6, generator=gen))
        pixel = _unit(look + 0.5 * torch.randn(16, 5, 6, generator=gen)) if split else image
        out.append(Embeddings(image, pixel))
    return out


def _old(query: list[Embeddings], context: list[Embeddings], cfg: ContextConfig) -> tuple:
    """The search before issue 33: stacked context, picks, one einsum per frame."""
    emb = torch.stack([e.image for e in query])
    pemb = torch.stack([e.pixel for e in query])
    ctx = torch.stack([e.image for e in context])
    picks = pick_frames(emb, ctx, cfg)
    pctx = torch.stack([e.pixel for e in context])
    return context_distances(emb, ctx, cfg, picks), context_distances(pemb, pctx, cfg, picks)


@pytest.mark.parametrize(
    ("search", "share", "split"), [(0, 0.3, True), (4, 0.3, True), (5, 0.5, False), (3, 0.05, True)]
)
def test_index_search_equals_the_per_frame_einsum_on_random_frames(
    search: int, share: float, split: bool
) -> None:
    gen = torch.Generator().manual_seed(search)
    context, query = _random_frames(gen, 11, split), _random_frames(gen, 6, split)
    cfg = ContextConfig(search_frames=search, share=share)
    index = ContextIndex().sync(context)
    emb = torch.stack([e.image for e in query])
    pemb = torch.stack([e.pixel for e in query]) if split else None
    image, pixel = index.distances(emb, pemb, index.pick(emb, cfg), cfg)
    old_image, old_pixel = _old(query, context, cfg)
    assert image.shape == old_image.shape == (6, 30)
    assert float((image - old_image).abs().max()) < 1e-5
    if split:
        assert pixel is not None and float((pixel - old_pixel).abs().max()) < 1e-5
    else:
        assert pixel is None


def test_admission_and_eviction_keep_the_index_equal_to_a_rebuild() -> None:
    gen = torch.Generator().manual_seed(7)
    frames = _random_frames(gen, 40, split=True)
    query = _random_frames(gen, 3, split=True)
    emb = torch.stack([e.image for e in query])
    pemb = torch.stack([e.pixel for e in query])
    cfg = ContextConfig(search_frames=4, share=0.3)
    kept = ContextIndex()
    window: list[Embeddings] = []
    for i, frame in enumerate(frames):  # a bounded deque: admit, evict the oldest, skip some
        if i % 5 == 3:
            continue
        window = (window + [frame])[-9:]
        if i % 3 == 0 and len(window) > 1:
            window = window[1:]  # aged out
        kept.sync(window)
        rebuilt = ContextIndex().sync(window)
        assert len(kept) == len(rebuilt) == len(window)
        got = kept.distances(emb, pemb, kept.pick(emb, cfg), cfg)
        want = rebuilt.distances(emb, pemb, rebuilt.pick(emb, cfg), cfg)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    # bounded: slots are reused, the matrix does not grow with the frames seen
    assert kept._image is not None and kept._image.shape[0] <= 16  # noqa: SLF001
    # another model's embeddings (another width) start the matrix over
    other = [_unit(torch.randn(8, 5, 6, generator=gen)) for _ in range(3)]
    other = [Embeddings(e, e) for e in other]
    assert len(kept.sync(other)) == 3 and kept._image.shape[1:] == (30, 8)  # noqa: SLF001
    assert len(kept.sync([])) == 0


def test_unchanged_frames_are_not_copied_again() -> None:
    gen = torch.Generator().manual_seed(3)
    frames = _random_frames(gen, 5, split=False)
    index = ContextIndex().sync(frames)
    before = index._image.clone()  # noqa: SLF001
    frames[0].image.add_(1.0)  # a payload already held is not read again
    index.sync(frames)
    torch.testing.assert_close(index._image, before)  # noqa: SLF001


@pytest.fixture(scope="module")
def runtime() -> CladRuntime:
    return stripe_runtime()


def _filled_line(rt: CladRuntime, threshold: float = math.inf) -> LineContext[Embeddings]:
    line: LineContext[Embeddings] = LineContext(ContextConfig(search_frames=4), threshold)
    for start in range(10, 40, 10):
        x = torch.from_numpy(np.stack([stripe_frame(s) for s in range(start, start + 10)]))
        score_and_offer(rt, x, line, float(start))
    assert len(line) > 4
    return line


def _old_scores(rt: CladRuntime, x: torch.Tensor, context: list[Embeddings],
                cfg: ContextConfig) -> torch.Tensor:  # fmt: skip
    """Fused scores the way they were computed before issue 33 (every frame searched)."""
    from engine.scoring.line_context import _weighted, fuse

    feats, embs = embed(rt, x)
    emb = torch.stack([e.image for e in embs])
    pemb = torch.stack([e.pixel for e in embs])
    a, p = _old(embs, context, cfg)
    n, _c, h, w = emb.shape
    amap = fuse(rt.bank_map(emb), a.reshape(n, h, w) / rt.scale, cfg.floor)
    pmap = fuse(rt.bank_map(pemb, pixel=True), p.reshape(n, h, w) / rt.pixel_scale, cfg.floor)
    return rt.finish(feats, _weighted(rt, amap), _weighted(rt, pmap), *x.shape[1:3]).scores


def test_scores_equal_the_search_before_on_the_stripe_line(runtime: CladRuntime) -> None:
    line = _filled_line(runtime)
    x = torch.from_numpy(np.stack([stripe_frame(99), stripe_frame(98, defect=True),
                                   stripe_frame(97)]))  # fmt: skip
    items = line.items(50.0)
    out, _e, _r = score_with_context(runtime, x, items, line.cfg, index=line.search_index())
    want = _old_scores(runtime, x, items, line.cfg)
    assert float((out.scores - want).abs().max()) < 1e-4


@pytest.mark.skipif(not BOTTLE.is_dir(), reason="mvtec-sample not in ../shared/data")
def test_scores_equal_the_search_before_on_real_frames() -> None:
    from engine.scoring.builder import ScoringConfig, build_runtime
    from engine.training.datasets import load_rgb, split_category

    split = split_category(BOTTLE, shots=1)
    rt = build_runtime([load_rgb(p, 160) for p in split.references],
                       ScoringConfig(input_size=160, aug_shifts=()))  # fmt: skip
    frames = np.stack([load_rgb(s.path, 160) for s in split.evaluated])
    assert rt.split_maps
    cfg = ContextConfig(search_frames=6)
    context = embed(rt, torch.from_numpy(frames[:12]))[1]
    x = torch.from_numpy(frames[12:])
    out, _e, _r = score_with_context(rt, x, context, cfg)
    want = _old_scores(rt, x, context, cfg)
    assert float((out.scores - want).abs().max()) < 1e-4


def test_the_lead_spares_normal_frames_and_changes_no_verdict(runtime: CladRuntime) -> None:
    x = torch.from_numpy(np.stack([stripe_frame(s) for s in range(60, 68)]
                                  + [stripe_frame(98, defect=True)]))  # fmt: skip
    plain = _filled_line(runtime)
    every, _e, reference = score_with_context(runtime, x, plain.items(50.0), plain.cfg)
    # a threshold between the normal frames' reference scores: some are under, some over
    threshold = float(reference[:8].median())
    items, cfg = plain.items(50.0), plain.cfg
    out, _e, ref2, searched = score_searched(
        runtime, x, items, cfg, index=plain.search_index(), threshold=threshold
    )
    torch.testing.assert_close(ref2, reference)
    # searched: exactly the frames over the threshold on their reference score
    assert searched.tolist() == (reference.double() > threshold).tolist()
    assert 0 < int(searched.sum()) < len(x)
    # every verdict as with every frame searched
    assert ((out.scores.double() > threshold) == (every.scores.double() > threshold)).all()
    # spared frames keep their reference-only score (never below the fused one)...
    torch.testing.assert_close(out.scores[~searched], reference[~searched])
    assert (every.scores[~searched] <= out.scores[~searched] + 1e-6).all()
    # ...searched ones the fused score, as before
    torch.testing.assert_close(out.scores[searched], every.scores[searched])
    torch.testing.assert_close(out.maps[searched], every.maps[searched])
    # the defect is over the threshold, searched, and stays anomalous
    assert bool(searched[-1]) and float(out.scores[-1]) > threshold
    # switched off: every frame searched
    off = cfg.model_copy(update={"lead": False})
    _o, _e, _r, all_searched = score_searched(runtime, x, items, off, threshold=threshold)
    assert bool(all_searched.all())


def test_score_and_offer_counts_searched_and_spared_frames(runtime: CladRuntime) -> None:
    line = _filled_line(runtime, threshold=1e9)  # every frame normal on its reference score
    searched, spared = line.searched_frames, line.spared_frames
    x = torch.from_numpy(np.stack([stripe_frame(s) for s in range(70, 74)]))
    score_and_offer(runtime, x, line, 60.0)
    assert (line.searched_frames, line.spared_frames) == (searched, spared + 4)
    line.threshold = -1.0  # every frame over it: every frame searched
    score_and_offer(runtime, x, line, 61.0)
    assert (line.searched_frames, line.spared_frames) == (searched + 4, spared + 4)


def test_the_workers_engine_keeps_its_verdicts_with_the_lead(runtime: CladRuntime) -> None:
    """Through the worker's adapter: the same stream, lead on and off, same verdicts and
    the same context; frames over the threshold keep the fused score."""
    from workers.streaming.scoring import CladRuntimeEngine

    stream = [stripe_frame(s, defect=s % 10 == 7) for s in range(200, 260)]
    plain = CladRuntimeEngine(runtime, threshold=math.inf, version="v", clock=lambda: 0.0)
    reference = np.concatenate([plain.infer(np.stack(stream[i : i + 6]))[0]
                                for i in range(0, 60, 6)])  # fmt: skip
    threshold = float(np.quantile(reference, 0.6))  # some normal frames over it
    engines = {
        lead: CladRuntimeEngine(runtime, threshold=threshold, version="v", clock=lambda: 0.0,
                                context=ContextConfig(search_frames=4, lead=lead))
        for lead in (True, False)
    }  # fmt: skip
    scores = {lead: [] for lead in engines}
    for i in range(0, 60, 6):
        for lead, engine in engines.items():
            scores[lead] += engine.infer(np.stack(stream[i : i + 6]))[0].tolist()
    on, off = np.array(scores[True]), np.array(scores[False])
    np.testing.assert_array_equal(on > threshold, off > threshold)
    assert len(engines[True].line_context) == len(engines[False].line_context) > 3
    line = engines[True].line_context
    assert line.spared_frames > 0 and line.searched_frames > 0
    over = reference > threshold
    np.testing.assert_allclose(on[over], off[over], atol=1e-5)  # searched: fused score
    assert (on[~over] >= off[~over] - 1e-6).all()  # spared: reference-only, an upper bound


def test_bf16_search_is_close_to_fp32_and_not_the_default() -> None:
    assert ContextConfig().search_precision == "fp32"
    gen = torch.Generator().manual_seed(11)
    context, query = _random_frames(gen, 9, True), _random_frames(gen, 4, True)
    cfg = ContextConfig(search_frames=4)
    emb = torch.stack([e.image for e in query])
    pemb = torch.stack([e.pixel for e in query])
    exact, half = ContextIndex().sync(context), ContextIndex("bf16").sync(context)
    assert half._image is not None and half._image.dtype == torch.bfloat16  # noqa: SLF001
    got = half.distances(emb, pemb, half.pick(emb, cfg), cfg)
    want = exact.distances(emb, pemb, exact.pick(emb, cfg), cfg)
    assert got[0].dtype == torch.float32
    gap = max(float((got[0] - want[0]).abs().max()), float((got[1] - want[1]).abs().max()))
    assert 0 < gap < 1e-2  # bf16 keeps ~3 significant digits of a similarity
    assert len(half.sync(context[2:])) == 7  # the same bookkeeping in bf16
