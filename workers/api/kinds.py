"""The defect kinds an operator picks from when correcting a region's description:
the product's own (its vocabulary and the corrections already given on it) and the
generic kinds the default describer names on every product."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.defects.defect_kinds import LABELS, UNCLEAR
from engine.defects.describer import HEDGE
from engine.defects.kind_names import KindNameError, kind_phrase
from engine.defects.vocabulary import VOCAB_DIR, VOCABULARY_FILE
from pipeline.storage.models import ModelVersion, OperatorLabel, Verdict

log = logging.getLogger(__name__)
_KEY = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
UNNAMED = "unnamed"  # how the "unclear" kind reads: its regions say what is measured


def kind_label(kind: str) -> str:
    """How a kind reads in a legend or a filter: "bent_lead" -> "bent lead", "unclear" ->
    "unnamed"; text that is not a key (regions stored before kinds) as it is."""
    if kind == UNCLEAR:
        return UNNAMED
    return kind.replace("_", " ") if _KEY.fullmatch(kind) else kind


def confirmable(kind: str | None, text: str | None) -> str | None:
    """The describer's answer as a description label says it (the contract's "confirmed
    describer answer": kind_phrase of its kind), or None where it named no single kind:
    unclear, a group answer ("a scratch or a cut"), or no kind stored."""
    if not kind or kind == UNCLEAR or (text and HEDGE in text):
        return None
    try:
        return kind_phrase(kind)
    except KindNameError:
        return None


def _vocabulary_kinds(path: Path) -> list[str]:
    try:
        kinds = json.loads(path.read_text()).get("kinds") or {}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("vocabulary %s unreadable: %s", path, exc)
        return []
    return [str(k).replace("_", " ") for k in kinds]


def product_kinds(session: Session, product: str, limit: int = 50) -> list[str]:
    """The product's own kinds: its active model's vocabulary, else the shipped one for
    the product, then descriptions operators already gave on it (most recent first)."""
    kinds: list[str] = []
    active = session.scalars(select(ModelVersion.path).where(
        ModelVersion.product == product, ModelVersion.status == "active")
        .order_by(ModelVersion.id.desc()).limit(1)).first()  # fmt: skip
    for path in ([Path(active) / VOCABULARY_FILE] if active else []) + [
            VOCAB_DIR / f"{product}.json"]:  # fmt: skip
        if path.is_file():
            kinds += _vocabulary_kinds(path)
            break
    given = session.scalars(
        select(OperatorLabel.description)
        .join(Verdict, Verdict.id == OperatorLabel.verdict_id)
        .where(Verdict.product == product, OperatorLabel.label == "description",
               OperatorLabel.description.is_not(None))
        .order_by(OperatorLabel.id.desc()).limit(limit))  # fmt: skip
    kinds += list(given)
    generic = set(LABELS.values())
    return [k for i, k in enumerate(kinds) if k and k not in kinds[:i] and k not in generic]


def generic_kinds() -> list[str]:
    return list(LABELS.values())
