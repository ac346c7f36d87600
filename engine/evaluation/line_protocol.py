"""The line protocol: test images scored the way a plant runs the line context.

A production line is mostly normal. The suite's "online" protocol scores each test image
among the other test images only, and 40-80% of those are defective, so it measures the
context at its worst rather than at its use. Here each test image sits inside a seeded
stream of the category's spare normal frames (train/good minus the references, never a
reference) at a given defect share, and the whole stream goes through the worker's
context path in batches: each batch scored against the references and the context of the
frames before it, then every frame offered to the context on its reference-only score
(`engine.scoring.line_context.score_and_offer`). Only the test images are measured.

The stream starts with a lead-in of normal frames (a running line has a full context when
a part arrives), then the test images at seeded positions among further normal frames so
that `defect_share` of that part is defective. There are usually fewer spare frames than
the stream needs, so they repeat, as a new seeded permutation each pass (no frame twice
within a pass, so a context of up to a pass's length holds no duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.scoring.line_context import (
    ContextConfig,
    Embeddings,
    LineContext,
    score_with_context,
)
from engine.scoring.runtime_model import CladRuntime
from engine.training.datasets import IMAGE_SUFFIXES, CategorySplit, load_rgb

MIN_SPARE_FRAMES = 20  # fewer spare normal frames: too few to make a line of; skipped
DEFAULT_DEFECT_SHARE = 0.1
FILLER = -1  # stream entry that is a spare normal frame, not a test image

Progress = Callable[[Iterable], Iterable]
MapResize = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LineStream:
    """The frames of one category's line, in order: (path, index into split.evaluated,
    or FILLER for a spare normal frame)."""

    frames: list[tuple[Path, int]]
    lead_in: int
    n_spare: int  # distinct spare normal frames the fillers were drawn from

    @property
    def n_fillers(self) -> int:
        return sum(1 for _p, j in self.frames if j == FILLER)

    def defect_share(self, labels: list[int]) -> float:
        """Share of defective frames after the lead-in."""
        body = self.frames[self.lead_in :]
        bad = sum(labels[j] for _p, j in body if j != FILLER)
        return bad / len(body) if body else 0.0


def spare_frames(cat: Path, split: CategorySplit) -> list[Path]:
    """train/good images that are not references, by name."""
    folder = Path(cat) / "train" / "good"
    if not folder.is_dir():
        return []
    held = set(split.references)
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p not in held
    )


def skip_reason(spare: list[Path]) -> str | None:
    """Why a category cannot be run as a line, or None when it can."""
    if len(spare) < MIN_SPARE_FRAMES:
        return (f"{len(spare)} spare train/good frames (not references); the line protocol "
                f"needs at least {MIN_SPARE_FRAMES}")  # fmt: skip
    return None


def build_stream(
    split: CategorySplit, spare: list[Path], defect_share: float = DEFAULT_DEFECT_SHARE,
    lead_in: int = 32, seed: int = 0,
) -> LineStream:  # fmt: skip
    """The seeded line of `split.evaluated` among the `spare` normal frames.

    After `lead_in` normal frames, the test images (seeded order) at seeded positions
    among as many normal frames as make `defect_share` of that part defective (none when
    the test images alone are already at or under the share)."""
    if not 0.0 < defect_share <= 1.0:
        raise ValueError(f"defect share must be in (0, 1], got {defect_share}")
    reason = skip_reason(spare)
    if reason is not None:
        raise ValueError(f"{split.name}: {reason}")
    if lead_in < 0:
        raise ValueError(f"lead-in must be >= 0, got {lead_in}")
    held = set(split.references)
    if any(p in held for p in spare):
        raise ValueError(f"{split.name}: a reference is among the spare frames")
    rng = np.random.default_rng(seed)
    n = len(split.evaluated)
    n_bad = sum(s.label for s in split.evaluated)
    body_len = max(n, math.ceil(n_bad / defect_share - 1e-9))
    fillers = _cycled(spare, lead_in + body_len - n, rng)
    slots = np.zeros(body_len, bool)
    slots[rng.choice(body_len, n, replace=False)] = True
    tests = iter(rng.permutation(n).tolist())
    frames: list[tuple[Path, int]] = [(fillers[i], FILLER) for i in range(lead_in)]
    rest = iter(fillers[lead_in:])
    for is_test in slots:
        if is_test:
            j = next(tests)
            frames.append((split.evaluated[j].path, j))
        else:
            frames.append((next(rest), FILLER))
    return LineStream(frames=frames, lead_in=lead_in, n_spare=len(spare))


def _cycled(pool: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    """`count` frames of `pool`, one seeded permutation after another."""
    out: list[Path] = []
    while len(out) < count:
        out += [pool[i] for i in rng.permutation(len(pool))]
    return out[:count]


@torch.no_grad()
def score_stream(
    rt: CladRuntime, split: CategorySplit, stream: LineStream, size: int,
    context: ContextConfig, metric_map: MapResize, batch: int = 8,
    progress: Progress = lambda it: it,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Image scores [N] and metric maps of split.evaluated, scored inside `stream`.

    Per batch of `batch` consecutive frames, exactly what `score_and_offer` does: the
    frames scored against the references and the context as it stood before the batch,
    then each offered on its reference-only score. The normal frames' context-fused
    outputs are never read and their admission does not depend on the context, so they
    are only embedded and reference-scored (once per distinct frame: the same frame
    gives the same embeddings); the test images take the full context path."""
    n = len(split.evaluated)
    line: LineContext[Embeddings] = LineContext(context)
    plain = context.model_copy(update={"min_frames": max(1, context.min_frames)})
    seen: dict[Path, tuple[Embeddings, float]] = {}
    scores = np.full(n, np.nan, np.float32)
    maps: list[np.ndarray | None] = [None] * n
    frames = stream.frames
    for t, start in enumerate(progress(range(0, len(frames), batch))):
        chunk = frames[start : start + batch]
        offered: list[tuple[Embeddings, float] | None] = [None] * len(chunk)
        tests = [k for k, (_p, j) in enumerate(chunk) if j != FILLER]
        new = [k for k, (p, j) in enumerate(chunk) if j == FILLER and p not in seen]
        now = float(t)  # one second per batch: the age limit never binds in an evaluation
        if tests:
            imgs = np.stack([load_rgb(chunk[k][0], size) for k in tests])
            out, embs, ref = score_with_context(rt, torch.from_numpy(imgs), line.items(now),
                                                context)  # fmt: skip
            for r, k in enumerate(tests):
                j = chunk[k][1]
                scores[j] = float(out.scores[r])
                maps[j] = metric_map(out.maps[r].numpy())
                offered[k] = (embs[r], float(ref[r]))
        if new:
            imgs = np.stack([load_rgb(chunk[k][0], size) for k in new])
            _out, embs, ref = score_with_context(rt, torch.from_numpy(imgs), [], plain)
            for r, k in enumerate(new):
                seen[chunk[k][0]] = (embs[r], float(ref[r]))
        for k, (p, j) in enumerate(chunk):
            emb, score = offered[k] if j != FILLER else seen[p]  # type: ignore[misc]
            line.offer(emb, score, now)
    if any(m is None for m in maps):
        raise RuntimeError("a test image was not in the stream")
    return scores, np.stack(maps)  # type: ignore[arg-type]
