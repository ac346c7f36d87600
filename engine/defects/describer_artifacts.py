"""Describer artefact, saved inside a model's version directory (or any directory):
    describer.pt      state dict (vocabulary phrasing embeddings included as buffers)
    describer.json    constructor config, feature settings, vocabulary keys, metrics
    vocabulary.json   the vocabulary it was trained with (operators may edit it)
Loading needs no text encoder unless the vocabulary on disk differs from the one
whose embeddings are stored; then the new phrasings are encoded once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.defects.describer import RegionDescriber
from engine.defects.kind_forest import KindForest
from engine.defects.region_features import WORK
from engine.defects.shape_describer import PIXELS, ShapeDescriber
from engine.defects.vocabulary import Vocabulary, load_vocabulary, save_vocabulary
from engine.errors import ModelArtifactError

WEIGHTS, CONFIG = "describer.pt", "describer.json"
FOREST = "forest.npz"  # the default describer's model (engine.defects.shape_describer)
GENERIC = "generic"  # the category of a describer of the generic kinds (a default one)
# the default describer shipped in the package (engine.training.describer_default rebuilds it)
DEFAULT_DIR = Path(__file__).parent / "describers" / "default"


@dataclass(frozen=True)
class LoadedDescriber:
    describer: RegionDescriber | ShapeDescriber
    vocabulary: Vocabulary
    features: dict[str, Any]  # backbone, stages, input_size, pool the embeddings expect
    metadata: dict[str, Any]
    # which describer this is, for cache keys: digest of its weights, config and vocabulary
    identity: str = ""
    source: str = "product"  # "product": trained for this product; "default": generic kinds
    # below this confidence a region reads "unclear defect" (calibrated held out); None: never
    unclear_below: float | None = None
    # ... unless its group of kinds is at least this sure ("a scratch or a cut"; the
    # default describer's, calibrated likewise); None: no group answers
    group_below: float | None = None


def init_from_clad(describer: RegionDescriber, branch: torch.nn.Module | None) -> bool:
    """Copy a trained CLAD text branch's image/text projections (the 'pretrained' group)."""
    if branch is None:
        return False
    try:
        describer.image_proj.load_state_dict(branch.image_proj.state_dict())
        describer.text_proj.load_state_dict(branch.text_proj.state_dict())
    except (AttributeError, RuntimeError):
        return False  # other shapes (another joint dim): keep the seeded initialisation
    return True


def save_describer(
    directory: str | Path, describer: RegionDescriber, vocab: Vocabulary,
    features: dict[str, Any], metrics: dict[str, Any] | None = None, half: bool = False,
) -> Path:  # fmt: skip
    """`half` stores the weights in float16 (a describer shipped in the package); they
    load back into float32."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": describer.config(), "features": features, "category": vocab.category,
            "kinds": vocab.keys, "phrases": vocab.phrases()[0], "metrics": metrics or {}}
    # temp names then rename: a worker reloading the directory never sees half a file
    tmp_w, tmp_c = out / f".{WEIGHTS}.tmp", out / f".{CONFIG}.tmp"
    state = describer.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp_w)
    tmp_c.write_text(json.dumps(meta, indent=2) + "\n")
    save_vocabulary(vocab, out)
    tmp_w.rename(out / WEIGHTS)
    tmp_c.rename(out / CONFIG)
    return out


def load_describer(
    directory: str | Path, vocabulary_path: str | Path | None = None,
    text_encoder: Any | None = None, source: str = "product",
) -> LoadedDescriber:  # fmt: skip
    vdir = Path(directory)
    if not (vdir / WEIGHTS).is_file() or not (vdir / CONFIG).is_file():
        raise ModelArtifactError(f"no describer in {vdir} (train one: clad train-describer)")
    meta = json.loads((vdir / CONFIG).read_text())
    cfg = dict(meta["config"])
    n_phrases = int(cfg.pop("n_phrases"))
    stored = torch.load(vdir / WEIGHTS, map_location="cpu", weights_only=True)
    describer = RegionDescriber(vocab_text=torch.zeros(n_phrases, int(cfg["text_dim"])),
                                vocab_owner=stored["vocab_owner"].tolist(), **cfg)  # fmt: skip
    describer.load_state_dict(stored)
    describer.eval()
    vocab = load_vocabulary(meta["category"], path=vocabulary_path, model_dir=vdir)
    phrases, owner = vocab.phrases()
    if phrases != meta["phrases"] or vocab.keys != meta["kinds"]:
        if text_encoder is None:
            from engine.scoring.text_encoder import (
                load_text_encoder,  # only for an edited vocabulary
            )

            text_encoder = load_text_encoder()
        describer.set_vocabulary(text_encoder.encode(phrases), owner)
    digest = hashlib.sha256((vdir / WEIGHTS).read_bytes())
    digest.update((vdir / CONFIG).read_bytes() + json.dumps(vocab.to_dict()).encode())
    metrics = dict(meta["metrics"])
    return LoadedDescriber(describer, vocab, dict(meta["features"]), metrics,
                           identity=digest.hexdigest()[:16],
                           source="default" if meta["category"] == GENERIC else source,
                           **_cuts(metrics))  # fmt: skip


def save_forest_describer(directory: str | Path, forest: KindForest, feature_names: list[str],
                          metrics: dict[str, Any], refine: bool = False,
                          enclosed_share: float = 0.0) -> Path:  # fmt: skip
    """The default describer: forest.npz + describer.json + vocabulary.json (generic).
    `refine`: the forest was fitted on regions refined by engine.defects.refine, so it
    describes its regions so too (the key is left out when false: a describer.json
    written before the step existed reads the same)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab = load_vocabulary(GENERIC)
    features: dict[str, Any] = {"encoder": PIXELS, "input_size": WORK, "names": feature_names}
    if refine:
        features["refine"] = True
    if enclosed_share > 0:  # likewise only when set (region_features.ENCLOSED_SHARE)
        features["enclosed_share"] = enclosed_share
    meta = {"type": "region-forest", "category": GENERIC, "kinds": vocab.keys,
            "features": features, "metrics": metrics}  # fmt: skip
    tmp_f, tmp_c = out / f".{FOREST}.tmp.npz", out / f".{CONFIG}.tmp"
    forest.save(tmp_f)
    tmp_c.write_text(json.dumps(meta, indent=2) + "\n")
    save_vocabulary(vocab, out)
    tmp_f.rename(out / FOREST)
    tmp_c.rename(out / CONFIG)
    return out


def load_forest_describer(directory: str | Path) -> LoadedDescriber:
    vdir = Path(directory)
    meta = json.loads((vdir / CONFIG).read_text())
    vocab = load_vocabulary(GENERIC, model_dir=vdir)
    if vocab.keys != meta["kinds"]:
        raise ModelArtifactError(f"{vdir}: the vocabulary's kinds {vocab.keys} are not the "
                                 f"forest's {meta['kinds']}")  # fmt: skip
    _phrases, owner = vocab.phrases()
    f = meta["features"]
    describer = ShapeDescriber(KindForest.load(vdir / FOREST), owner,
                               refine=bool(f.get("refine", False)),
                               enclosed_share=float(f.get("enclosed_share", 0.0)))  # fmt: skip
    digest = hashlib.sha256((vdir / FOREST).read_bytes())
    digest.update((vdir / CONFIG).read_bytes() + json.dumps(vocab.to_dict()).encode())
    return LoadedDescriber(describer, vocab, dict(meta["features"]), dict(meta["metrics"]),
                           identity=digest.hexdigest()[:16], source="default",
                           **_cuts(meta["metrics"]))  # fmt: skip


def _cuts(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The calibrated cuts a describer.json records (absent: None, never cut)."""
    return {name: None if metrics.get(name) is None else float(metrics[name])
            for name in ("unclear_below", "group_below")}  # fmt: skip


def load_default_describer(directory: str | Path = DEFAULT_DIR) -> LoadedDescriber:
    """The generic-kind describer that serves every product without one of its own:
    a region-feature forest (forest.npz), or an embedding describer (describer.pt)."""
    if (Path(directory) / FOREST).is_file():
        return load_forest_describer(directory)
    return load_describer(directory, source="default")
