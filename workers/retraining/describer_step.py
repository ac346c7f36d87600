"""Retraining learns descriptions: the product's describer from what operators named.

The regions operators described (pipeline.storage.description_labels: corrections,
confirmed describer answers, drawn regions with words) teach a challenger describer
(paper eq. 5, engine.training.describer_train) on the active model's own patch
embeddings of the stored frames. Champion (the describer the worker serves now: the
product's own, else the default one) and challenger are scored the way the worker
describes (embedding, text search, its unclear cut) on held-out labelled regions,
split by frame, so no region of a held-out frame is trained on. The challenger is
promoted only when its held-out accuracy does not fall: it is saved into a new model
version (the active one's files plus the describer), which is activated, so workers
pick it up between batches like any model and every cache key changes with it
(pipeline.region_cache.description_key: model version + describer identity).
Below the minimum (two kinds with three regions each) nothing is trained and the
result says what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from engine.defects import rle
from engine.defects.defect_kinds import UNCLEAR
from engine.defects.describer import (
    RegionDescriber,
    embed_regions,
    frame_patch_embeddings,
    mark_unclear,
    pool_grid,
    search_descriptions,
)
from engine.defects.describer_artifacts import (
    CONFIG,
    FOREST,
    WEIGHTS,
    LoadedDescriber,
    init_from_clad,
    load_describer,
    save_describer,
)
from engine.defects.kind_names import KindNameError, kind_key, kind_phrase
from engine.defects.vocabulary import VOCABULARY_FILE, Vocabulary
from engine.scoring.artifacts import load_model
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.text_encoder import TextEncoderConfig, load_text_encoder
from engine.training.describer_train import DescriberTrainConfig, RegionSet, train_describer
from pipeline.storage.database import transaction
from pipeline.storage.description_labels import DescribedRegion, description_labels
from pipeline.storage.frame_store import load_frame
from pipeline.storage.models import Frame, ModelVersion
from pipeline.storage.repository import (
    active_model_version,
    register_model_version,
)
from workers.retraining.data import is_held_out
from workers.retraining.placement import place_registered

log = logging.getLogger(__name__)
_SALT = b"clad-describer-held-out"
_DESCRIBER_FILES = {WEIGHTS, CONFIG, FOREST, VOCABULARY_FILE}


@dataclass(frozen=True)
class DescriberOptions:
    held_out_share: float = 0.3
    min_kinds: int = 2
    min_regions_per_kind: int = 3
    steps: int = 300
    batch_size: int = 64
    seed: int = 0
    dry_run: bool = False
    force: bool = False  # train even when the active describer came from the same labels
    # a promoted describer is trained again, same recipe, on every labelled region (the
    # held-out ones too) before it is saved: the decision is made on the split, the line
    # gets all its operators' words (with a handful of labels a third more data counts)
    refit_all: bool = True


@dataclass
class DescriberResult:
    status: str = "skipped"  # promoted | kept | skipped | dry-run
    reason: str = ""
    regions_per_kind: dict[str, int] = field(default_factory=dict)
    train_regions: int = 0
    held_out_regions: int = 0
    champion: str | None = None  # "product <identity>" or "default <identity>"
    champion_accuracy: float | None = None  # held-out kind accuracy, fraction
    challenger_accuracy: float | None = None
    version: str | None = None  # the model version that carries the promoted describer
    refit_regions: int | None = None  # regions the saved describer was refit on (refit_all)
    skipped: dict[str, int] = field(default_factory=dict)  # regions left out, by reason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelledRegion:
    frame_id: uuid.UUID
    kind: str
    mask: np.ndarray  # bool [S, S], the model's input size


@dataclass
class LabelledFrames:
    """The labelled regions with the model inputs of their frames (uint8 [S, S, 3])."""

    images: dict[uuid.UUID, np.ndarray] = field(default_factory=dict)
    regions: list[LabelledRegion] = field(default_factory=list)


def kinds_of(named: list[DescribedRegion]) -> tuple[list[tuple[DescribedRegion, str]],
                                                     dict[str, int]]:
    """Each named region with its kind key (the recorded one, else its text folded into
    the kinds seen so far); (regions, skipped counts). "unclear" teaches no kind."""
    out: list[tuple[DescribedRegion, str]] = []
    skipped: Counter[str] = Counter()
    known: list[str] = []
    for n in named:
        try:
            key = n.kind or kind_key(n.description, known)
        except KindNameError:
            skipped["no_kind"] += 1
            continue
        if key == UNCLEAR:
            skipped["unclear"] += 1
            continue
        known += [key] if key not in known else []
        out.append((n, key))
    return out, dict(skipped)


def missing_minimum(counts: dict[str, int], min_kinds: int, per_kind: int) -> str | None:
    """What is missing to train a describer, in words; None when the minimum is met."""
    enough = [k for k, n in counts.items() if n >= per_kind]
    if len(enough) >= min_kinds:
        return None
    have = ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    short = min_kinds - len(enough)
    return (f"needs {min_kinds} kinds with {per_kind} labelled regions each; has "
            f"{have or 'no labelled regions'}: name {short} more kind"
            f"{'s' if short > 1 else ''} on {per_kind} regions each")


def _model_input(data: bytes, size: int) -> np.ndarray | None:
    """The frame as the worker feeds it to the model (workers.streaming.decode)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    shrink = max(bgr.shape[:2]) > size
    resized = cv2.resize(bgr, (size, size),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _mask(mask_rle: dict[str, Any], size: int) -> np.ndarray | None:
    try:
        mask = rle.decode(mask_rle).astype(np.uint8)
    except (KeyError, TypeError, ValueError):
        return None
    if mask.shape != (size, size):  # drawn masks are in frame pixels, found ones in map's
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask > 0 if mask.any() else None


def load_labelled(session: Session, named: list[tuple[DescribedRegion, str]], *,
                  frame_dir: Path, size: int, skipped: dict[str, int]) -> LabelledFrames:
    """The regions whose frame is still stored and decodes, at the model's input size."""
    out = LabelledFrames()
    missing: set[uuid.UUID] = set()
    for n, kind in named:
        if n.frame_id in missing:
            skipped["no_image"] = skipped.get("no_image", 0) + 1
            continue
        if n.frame_id not in out.images:
            frame = session.get(Frame, n.frame_id)
            payload = load_frame(frame, frame_dir) if frame is not None else None
            image = _model_input(payload, size) if payload else None
            if image is None:
                missing.add(n.frame_id)
                skipped["no_image"] = skipped.get("no_image", 0) + 1
                continue
            out.images[n.frame_id] = image
        mask = _mask(n.mask_rle, size)
        if mask is None:
            skipped["empty_mask"] = skipped.get("empty_mask", 0) + 1
            continue
        out.regions.append(LabelledRegion(n.frame_id, kind, mask))
    return out


def split_by_frame(regions: list[LabelledRegion], share: float
                   ) -> tuple[list[LabelledRegion], list[LabelledRegion]]:
    """(train, held out), whole frames on one side, by a hash of the frame id
    (workers.retraining.data.is_held_out, its own salt): a frame held out once is held
    out in every later run and never trained on, whatever words it is given later.
    Only a kind the hash leaves untested (on two frames or more, none held out) has its
    first frame by hash held out as well, and a kind it holds out entirely (a kind on one
    frame included) gets its last one back for training."""
    def rank(frame_id: uuid.UUID) -> bytes:
        return hashlib.sha256(_SALT + frame_id.bytes).digest()

    held = {r.frame_id for r in regions if is_held_out(r.frame_id, share, salt=_SALT)}
    frames_of: dict[str, list[uuid.UUID]] = {}
    for r in regions:
        if r.frame_id not in frames_of.setdefault(r.kind, []):
            frames_of[r.kind].append(r.frame_id)
    for kind in sorted(frames_of):
        frames = sorted(frames_of[kind], key=rank)
        if len(frames) >= 2 and not held.intersection(frames):
            held.add(frames[0])
        elif held.issuperset(frames):  # every frame of the kind held out: it is never learnt
            held.discard(frames[-1])
    return ([r for r in regions if r.frame_id not in held],
            [r for r in regions if r.frame_id in held])


@torch.no_grad()
def _patch_features(runtime: CladRuntime, images: list[np.ndarray], grid: int,
                    batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        frames = torch.from_numpy(np.stack(images[i:i + batch]))
        emb = frame_patch_embeddings(runtime.encoder, runtime.preprocess, frames, runtime.pool)
        out.append(pool_grid(emb, grid).half())
    return torch.cat(out)


def _region_set(frames: LabelledFrames, regions: list[LabelledRegion], kinds: list[str],
                features: dict[uuid.UUID, torch.Tensor]) -> RegionSet:
    order = list(dict.fromkeys(r.frame_id for r in regions))
    row = {f: i for i, f in enumerate(order)}
    masks = torch.stack([torch.nn.functional.max_pool2d(
        torch.from_numpy(r.mask)[None, None].float(), 2)[0, 0] > 0 for r in regions])
    return RegionSet(kinds, [Path(f.hex) for f in order],  # names only: frames, not files
                     torch.stack([features[f] for f in order]),
                     torch.tensor([row[r.frame_id] for r in regions]), masks,
                     torch.tensor([kinds.index(r.kind) for r in regions]))


def held_out_accuracy(loaded: LoadedDescriber, patch_of: dict[uuid.UUID, torch.Tensor],
                      regions: list[LabelledRegion]) -> float:
    """Share of the regions whose answer, as the worker gives it (text search and the
    describer's unclear cut), names their labelled kind."""
    by_frame: dict[uuid.UUID, list[LabelledRegion]] = {}
    for r in regions:
        by_frame.setdefault(r.frame_id, []).append(r)
    phrases, _owner = loaded.vocabulary.phrases()
    right = 0
    for frame_id, rs in by_frame.items():
        emb = embed_regions(loaded.describer, patch_of[frame_id],
                            np.stack([r.mask for r in rs]))
        found = mark_unclear(search_descriptions(loaded.describer, emb,
                                                 loaded.vocabulary.keys, phrases),
                             loaded.unclear_below, loaded.group_below)
        right += sum(d.kind == r.kind for d, r in zip(found, rs, strict=True))
    return right / len(regions) if regions else float("nan")


def _champion(version_dir: Path, runtime: CladRuntime) -> tuple[LoadedDescriber | None, Any]:
    """The describer the worker serves for this model and its encoder (None: the
    model's own patch embeddings); (None, None) when it has none at all."""
    from workers.streaming.scoring import default_for, load_region_describer

    own = load_region_describer(version_dir, runtime)
    if own is not None:
        return own, None  # type: ignore[return-value]
    loaded, encoder = default_for(runtime)
    return loaded, encoder  # type: ignore[return-value]


def _features_for(encoder: Any, runtime: CladRuntime, images: dict[uuid.UUID, np.ndarray],
                  frame_ids: list[uuid.UUID]) -> dict[uuid.UUID, torch.Tensor]:
    out = {}
    for f in frame_ids:
        frame = images[f][None]
        if encoder is not None:
            out[f] = encoder(frame)
        else:
            out[f] = frame_patch_embeddings(runtime.encoder, runtime.preprocess,
                                            torch.from_numpy(np.ascontiguousarray(frame)),
                                            runtime.pool)
    return out


def _link_or_copy(src: str, dst: str) -> None:
    # Versions are never changed in place, so large files may be shared; JSON files are
    # rewritten below and get copies of their own.
    if src.endswith(".json"):
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_version_with_describer(active: ModelVersion, model_dir: Path, product: str,
                                describer: RegionDescriber, vocab: Vocabulary,
                                features: dict[str, Any], metrics: dict[str, Any]
                                ) -> tuple[Path, Path]:
    """A new version: the active version's model files + the new describer, staged under
    models/.work; returns (staged, final). It moves to final only once registered, so a
    directory under models/<product>/ is always a registered version."""
    version = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-describer"
    out = model_dir / product / version
    tmp = model_dir / ".work" / product / f"staged-{version}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(active.path, tmp, copy_function=_link_or_copy,
                    ignore=lambda _d, names: [n for n in names if n in _DESCRIBER_FILES
                                              or n.startswith(".")])
    config = json.loads((tmp / "config.json").read_text())
    config["version"] = version  # the worker reads its version from here
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model_metrics = json.loads((tmp / "metrics.json").read_text()) or {}
    model_metrics.update(parent=active.version, describer=metrics)
    (tmp / "metrics.json").write_text(json.dumps(model_metrics, indent=2, default=str) + "\n")
    save_describer(tmp, describer, vocab, features, metrics)
    return tmp, out


def carry_describer(parent_dir: str | Path, child_dir: str | Path) -> None:
    """A scoring challenger keeps its parent's describer (same encoder, same features)."""
    for name in (WEIGHTS, CONFIG, VOCABULARY_FILE):
        src = Path(parent_dir) / name
        if (Path(parent_dir) / WEIGHTS).is_file() and src.is_file():
            shutil.copy2(src, Path(child_dir) / name)


def labels_fingerprint(named: list[tuple[DescribedRegion, str]],
                       options: DescriberOptions) -> str:
    """What a describer is trained from: each named region (its frame, the region or the
    mask drawn), the kind it was given, and the recipe. Unchanged, a run would only train
    the same describer again and leave one more model version."""
    rows = sorted(f"{r.frame_id}|{r.region_id}|"
                  f"{json.dumps(r.mask_rle, sort_keys=True) if r.drawn else ''}|{kind}"
                  for r, kind in named)
    recipe = {k: v for k, v in asdict(options).items() if k not in ("dry_run", "force")}
    return hashlib.sha256(json.dumps([rows, recipe], sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def retrain_describer(factory: sessionmaker[Session], product: str, *, model_dir: Path,
                      frame_dir: Path, options: DescriberOptions | None = None,
                      progress: bool = False) -> DescriberResult:
    opts = options or DescriberOptions()
    started = time.monotonic()
    result = DescriberResult()

    def say(message: str) -> None:
        log.info("describer %s [%.0f s]: %s", product, time.monotonic() - started, message)

    with factory() as session:
        active = active_model_version(session, product)
        named, result.skipped = kinds_of(description_labels(session, product))
        counts = Counter(kind for _n, kind in named)
        result.regions_per_kind = dict(counts.most_common())
        if active is None:
            result.reason = f"no active model for product {product!r}"
            return result
        missing = missing_minimum(result.regions_per_kind, opts.min_kinds,
                                  opts.min_regions_per_kind)
        if missing:
            result.reason = f"kept the current describer: {missing}"
            say(result.reason)
            return result
        fingerprint = labels_fingerprint(named, opts)
        trained_on = ((active.metrics or {}).get("describer") or {}).get("labels_fingerprint")
        if trained_on == fingerprint and not opts.force:
            result.reason = (f"nothing new: the active describer ({active.version}) was "
                             f"trained on these {len(named)} named regions; --force trains "
                             f"anyway")
            say(result.reason)
            return result
        if opts.dry_run:
            result.status = "dry-run"
            result.reason = (f"would train a describer of {len(counts)} kinds on "
                             f"{sum(counts.values())} labelled regions")
            return result
        model = load_model(active.path)
        runtime = model.runtime
        frames = load_labelled(session, named, frame_dir=frame_dir,
                               size=int(runtime.input_size), skipped=result.skipped)
    stored = Counter(r.kind for r in frames.regions)
    result.regions_per_kind = dict(stored.most_common())
    missing = missing_minimum(result.regions_per_kind, opts.min_kinds,
                              opts.min_regions_per_kind)
    if missing:
        result.reason = f"kept the current describer: of the stored frames, {missing}"
        say(result.reason)
        return result
    train, held = split_by_frame(frames.regions, opts.held_out_share)
    result.train_regions, result.held_out_regions = len(train), len(held)
    if not held:
        result.reason = ("kept the current describer: no kind is labelled on two frames, "
                         "so nothing can be held out to compare on")
        say(result.reason)
        return result
    kinds = sorted({r.kind for r in train})
    say(f"{len(train)} training and {len(held)} held-out regions, kinds {kinds}")
    text_cfg = model.metadata.get("metrics", {}).get("text_encoder") or {}
    vocab = Vocabulary(product, product.replace("_", " "),
                       {k: [kind_phrase(k)] for k in kinds})
    phrases, owner = vocab.phrases()
    text = load_text_encoder(TextEncoderConfig(**text_cfg)).encode(phrases)
    torch.manual_seed(opts.seed)
    describer = RegionDescriber(sum(runtime.encoder.channels), int(text.shape[1]), text, owner)
    feats = dict(zip(frames.images, _patch_features(runtime, list(frames.images.values()),
                                                    describer.grid), strict=True))
    pretrained = init_from_clad(describer, getattr(runtime, "text_branch", None))
    cfg = DescriberTrainConfig(steps=opts.steps, batch_size=opts.batch_size, seed=opts.seed)
    train_metrics = train_describer(describer, _region_set(frames, train, kinds, feats), owner,
                                    cfg, progress=progress)
    say(f"trained ({opts.steps} steps, loss {train_metrics['final_loss']:.3f})")
    held_frames = list(dict.fromkeys(r.frame_id for r in held))
    features = {"input_size": int(runtime.input_size), "pool": int(runtime.pool),
                "grid": describer.grid, "source": "operator labels"}
    challenger = LoadedDescriber(describer, vocab, features, {})
    own_patch = _features_for(None, runtime, frames.images, held_frames)
    result.challenger_accuracy = held_out_accuracy(challenger, own_patch, held)
    champion, encoder = _champion(Path(active.path), runtime)
    if champion is None:
        result.champion_accuracy = 0.0
        result.champion = "none"
    else:
        patch = own_patch if encoder is None else _features_for(encoder, runtime,
                                                                frames.images, held_frames)
        result.champion_accuracy = held_out_accuracy(champion, patch, held)
        result.champion = f"{champion.source} {champion.identity}"
    new, old = result.challenger_accuracy, result.champion_accuracy
    say(f"held-out kind accuracy: champion ({result.champion}) {old:.3f}, "
        f"challenger {new:.3f}")
    if new < old:
        result.status = "kept"
        result.reason = (f"challenger worse on {len(held)} held-out regions: {new:.3f} vs "
                         f"champion {old:.3f}; kept the current describer")
        say(result.reason)
        return result
    if opts.refit_all:
        torch.manual_seed(opts.seed)
        describer = RegionDescriber(sum(runtime.encoder.channels), int(text.shape[1]), text,
                                    owner)
        pretrained = init_from_clad(describer, getattr(runtime, "text_branch", None))
        everything = [r for r in frames.regions if r.kind in kinds]
        train_metrics = train_describer(describer, _region_set(frames, everything, kinds, feats),
                                        owner, cfg, progress=progress)
        result.refit_regions = len(everything)
        say(f"refit on all {len(everything)} labelled regions")
    metrics = {**train_metrics, "init_from_clad": pretrained,
               "refit_regions": result.refit_regions,
               "regions_per_kind": result.regions_per_kind,
               "train_regions": len(train), "held_out_regions": len(held),
               "held_out_accuracy": new, "champion_held_out_accuracy": old,
               "champion": result.champion, "parent_version": active.version}
    staged, path = save_version_with_describer(active, model_dir, product, describer, vocab,
                                               features, metrics)
    identity = load_describer(staged).identity
    with transaction(factory) as session:
        row = register_model_version(
            session, version=path.name, product=product, path=str(path),
            threshold=active.threshold,
            metrics={**(active.metrics or {}), "parent": active.version,
                     "describer": {"identity": identity, "labels_fingerprint": fingerprint,
                                   "held_out_accuracy": new,
                                   "champion_held_out_accuracy": old,
                                   "regions_per_kind": result.regions_per_kind}})
        row.status = "candidate"
    place_registered(factory, staged, path, activate=True)
    if not any(staged.parent.iterdir()):
        staged.parent.rmdir()
    result.status, result.version = "promoted", path.name
    refit = (f", refit on all {result.refit_regions} labelled regions"
             if result.refit_regions else "")
    result.reason = f"describer {identity} in model version {path.name}{refit}"
    say(f"held-out kind accuracy {old:.3f} -> {new:.3f}: {result.reason}")
    return result


def describer_line(product: str, result: dict[str, Any]) -> str:
    """One line of `clad retrain` output: regions per kind, champion vs challenger, the
    outcome and why."""
    if not result:
        return f"describer {product}: not run"
    kinds = ", ".join(f"{k} {n}" for k, n in result.get("regions_per_kind", {}).items())
    old, new = result.get("champion_accuracy"), result.get("challenger_accuracy")
    figures = (f"; held-out kind accuracy champion {old:.3f} vs challenger {new:.3f} on "
               f"{result.get('held_out_regions')} regions" if old is not None
               and new is not None else "")
    return (f"describer {product}: {result.get('status')}{figures}; regions per kind: "
            f"{kinds or 'none'}; {result.get('reason')}")
