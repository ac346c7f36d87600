"""A product's vocabulary grown from its labels, with hand-written files as optional seeds.

The kinds a product's describer learns are the kinds its people named: the defect
folders of a data set ("bent_lead", "misplaced") or what operators typed on the line.
Each name folds into one key (engine.defects.kind_names), and each key gets phrasings
a text encoder reads. A seed vocabulary (vocab/<category>.json, a model's
vocabulary.json, default.json) lends its hand-written phrasings to the keys it shares
with the labels; a seed kind no label names is left out (a describer cannot learn a kind
it has no example of), and a label the seed does not know is a kind all the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.defects.kind_names import describes_the_part, fold_kinds, kind_key, kind_phrase
from engine.defects.vocabulary import Vocabulary


def phrasings(key: str, object_name: str) -> list[str]:
    """Sentences for a kind no seed describes: "bent_lead" on a transistor ->
    "a bent lead on the transistor", "a transistor with a bent lead", "a bent lead";
    "misplaced" -> "a misplaced transistor", "the transistor is misplaced", "misplaced"."""
    phrase = kind_phrase(key)
    if not describes_the_part(key):
        return [f"{phrase} on the {object_name}", f"a {object_name} with {phrase}", phrase]
    article = "an" if phrase[0] in "aeiou" else "a"
    return [f"{article} {phrase} {object_name}", f"the {object_name} is {phrase}", phrase]


def vocabulary_from_labels(category: str, names: Iterable[str], *,
                           seed: Vocabulary | None = None,
                           object_name: str | None = None
                           ) -> tuple[Vocabulary, dict[str, str]]:  # fmt: skip
    """The vocabulary of the kinds `names` name (in first-seen order) and each name's key.

    `seed`'s phrasings serve the keys it shares with the names (its keys are folded the
    same way, so a seed "Scratch" serves a folder "scratches")."""
    obj = object_name or (seed.object_name if seed is not None else category.replace("_", " "))
    seeded: dict[str, list[str]] = {}
    if seed is not None:
        for key, texts in seed.kinds.items():
            seeded.setdefault(kind_key(key, seeded), list(texts))
    unique = list(dict.fromkeys(names))
    key_of = fold_kinds(unique, known=seeded)
    kinds: dict[str, list[str]] = {}
    for name in unique:
        key = key_of[name]
        if key not in kinds:
            kinds[key] = seeded.get(key) or phrasings(key, obj)
    if not kinds:
        raise ValueError(f"{category}: no labelled defect kind to build a vocabulary from")
    return Vocabulary(category=category, object_name=obj, kinds=kinds), key_of
