"""Defect kinds named by people: one key per kind, and a phrase a person reads.

A product's kinds come from its labels: the defect folders of a data set
("bent_lead") and what operators type on the line ("Bent lead", "a bent lead",
"bent leads"). Every spelling of one kind must fold into one key, or a describer
would learn two kinds from one and split its examples between them. The key is
the folder-name style (lower case, words joined by "_"); the phrase is how a
region reads ("a bent lead").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# What a kind name may be: a few words. Longer text is a sentence, not a kind.
MAX_KIND_CHARS = 60
_ARTICLES = ("a", "an", "the", "some")
# Nouns read without "a": "contamination on the part", not "a contamination".
_MASS_NOUNS = frozenset({
    "contamination", "glue", "oil", "liquid", "color", "colour", "rust", "dust", "dirt",
    "debris", "residue", "corrosion", "discoloration", "discolouration", "fray", "damage",
    "misalignment", "oxidation", "porosity", "flash", "burr", "paint", "grease", "water",
})  # fmt: skip
# Words a folder name ends with that describe rather than name ("misplaced", "uneven"):
# read without an article too. Past participles (-ed, -en) are caught by their ending.
_DESCRIBING = frozenset({"bent", "rough", "loose", "missing", "torn", "worn", "dirty",
                         "faulty", "large", "small", "defective", "open"})
_WORD = re.compile(r"[a-z0-9]+")


class KindNameError(ValueError):
    """Text that cannot name a defect kind (empty, only an article, too long)."""


def kind_key(text: str, known: Iterable[str] = ()) -> str:
    """The key of the kind that `text` names: "Scratch ", "a scratch" and "scratch" are
    all "scratch"; "bent-lead" and "Bent lead" are "bent_lead". A plural ("scratches")
    folds into a known singular key, and a singular into a known plural one, so an
    operator's spelling joins the kind a data set already has."""
    words = _WORD.findall(text.lower().replace("_", " "))
    while words and words[0] in _ARTICLES:
        words = words[1:]
    if not words:
        raise KindNameError(f"{text!r} names no defect kind")
    key = "_".join(words)
    if len(key) > MAX_KIND_CHARS:
        raise KindNameError(f"a defect kind is a few words ({MAX_KIND_CHARS} characters at "
                            f"most), not {len(key)}: {text[:40]!r}...")
    known_set = set(known)
    if key in known_set:
        return key
    for other in _number_variants(key):
        if other in known_set:
            return other
    return key


def _number_variants(key: str) -> list[str]:
    """The key with its last word in the other number (scratches <-> scratch)."""
    head, _, last = key.rpartition("_")
    prefix = f"{head}_" if head else ""
    variants = []
    if last.endswith("es") and len(last) > 3:
        variants.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 2:
        variants.append(last[:-1])
    variants += [f"{last}s", f"{last}es"]
    return [prefix + v for v in variants]


def kind_phrase(key: str) -> str:
    """How a region of this kind reads: "bent_lead" -> "a bent lead",
    "contamination" -> "contamination", "edge_crack" -> "an edge crack",
    "misplaced" -> "misplaced"."""
    words = key.replace("_", " ").split()
    if not words:
        raise KindNameError("an empty kind key has no phrase")
    text, last = " ".join(words), words[-1]
    if (last in _MASS_NOUNS or last in _DESCRIBING or last.endswith(("ed", "en"))
            or (last.endswith("s") and not last.endswith("ss"))):
        return text
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {text}"


def describes_the_part(key: str) -> bool:
    """Whether the kind's last word says how the part is ("misplaced", "bent", "broken_large")
    rather than naming a thing on it ("scratch", "contamination", "bent_lead")."""
    words = key.replace("_", " ").split()
    return bool(words) and (words[-1] in _DESCRIBING or words[-1].endswith(("ed", "en")))


def fold_kinds(names: Iterable[str], known: Iterable[str] = ()) -> dict[str, str]:
    """Each name -> its kind key; names that fold together share a key. `known` keys
    (the product's kinds so far) are matched first, then the earlier names."""
    keys: list[str] = list(known)
    out: dict[str, str] = {}
    for name in names:
        key = kind_key(name, keys)
        out[name] = key
        if key not in keys:
            keys.append(key)
    return out
