"""Per-product defect vocabularies: defect-kind key -> phrasings (JSON data, not code).

Operators extend a product's vocabulary by dropping a JSON file in the model's
version directory (`vocabulary.json`) or passing a path; those win over the
files shipped in engine/defects/vocab/. "<object>" in a phrasing is replaced by the
product's object name, so default.json serves any product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOCAB_DIR = Path(__file__).parent / "vocab"
VOCABULARY_FILE = "vocabulary.json"


@dataclass(frozen=True)
class Vocabulary:
    category: str
    object_name: str
    kinds: dict[str, list[str]]  # defect-kind key (MVTec folder name) -> phrasings

    @property
    def keys(self) -> list[str]:
        return list(self.kinds)

    def phrases(self) -> tuple[list[str], list[int]]:
        """All phrasings flattened, with the kind index of each."""
        texts, owner = [], []
        for i, key in enumerate(self.kinds):
            texts += self.kinds[key]
            owner += [i] * len(self.kinds[key])
        return texts, owner

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "object": self.object_name, "kinds": self.kinds}


def parse_vocabulary(data: dict[str, Any], category: str) -> Vocabulary:
    obj = str(data.get("object") or category.replace("_", " "))
    raw = data.get("kinds")
    if not isinstance(raw, dict) or not raw:
        raise ValueError("a vocabulary needs a non-empty 'kinds' mapping")
    kinds: dict[str, list[str]] = {}
    for key, phrases in raw.items():
        if isinstance(phrases, str):
            phrases = [phrases]
        texts = [str(p).replace("<object>", obj) for p in phrases if str(p).strip()]
        if not texts:
            raise ValueError(f"defect kind {key!r} has no phrasing")
        kinds[str(key)] = texts
    return Vocabulary(category=str(data.get("category") or category), object_name=obj, kinds=kinds)


def load_vocabulary(
    category: str, *, path: str | Path | None = None, model_dir: str | Path | None = None
) -> Vocabulary:
    """First found of: `path`, `model_dir`/vocabulary.json, vocab/<category>.json, default."""
    candidates = []
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        candidates.append(Path(path))
    if model_dir is not None:
        candidates.append(Path(model_dir) / VOCABULARY_FILE)
    candidates += [VOCAB_DIR / f"{category}.json", VOCAB_DIR / "default.json"]
    for cand in candidates:
        if cand.is_file():
            data = json.loads(cand.read_text())
            if cand.name == "default.json" and cand.parent == VOCAB_DIR:
                data["object"] = category.replace("_", " ")
            return parse_vocabulary(data, category)
    raise FileNotFoundError(f"no vocabulary for {category!r}")  # default.json is shipped


def save_vocabulary(vocab: Vocabulary, directory: str | Path) -> Path:
    out = Path(directory) / VOCABULARY_FILE
    out.write_text(json.dumps(vocab.to_dict(), indent=2) + "\n")
    return out
