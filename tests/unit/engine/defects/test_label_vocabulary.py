"""A vocabulary grown from labels: folders and typed names fold into kinds, seeds only
lend phrasings."""

from __future__ import annotations

import pytest

from engine.defects.label_vocabulary import phrasings, vocabulary_from_labels
from engine.defects.vocabulary import Vocabulary, load_vocabulary

pytestmark = pytest.mark.unit


def test_a_category_without_a_vocabulary_file_gets_its_folders_as_kinds() -> None:
    vocab, key_of = vocabulary_from_labels(
        "transistor", ["bent_lead", "cut_lead", "damaged_case", "misplaced", "bent_lead"])
    assert vocab.keys == ["bent_lead", "cut_lead", "damaged_case", "misplaced"]
    assert vocab.kinds["bent_lead"] == ["a bent lead on the transistor",
                                        "a transistor with a bent lead", "a bent lead"]
    assert vocab.kinds["misplaced"] == ["a misplaced transistor", "the transistor is misplaced",
                                        "misplaced"]  # fmt: skip
    assert key_of["damaged_case"] == "damaged_case"


def test_spellings_of_one_kind_fold_into_one() -> None:
    vocab, key_of = vocabulary_from_labels("widget", ["Scratch ", "a scratch", "scratches",
                                                      "Bent-Lead", "bent lead"])  # fmt: skip
    assert vocab.keys == ["scratch", "bent_lead"]
    assert key_of == {"Scratch ": "scratch", "a scratch": "scratch", "scratches": "scratch",
                      "Bent-Lead": "bent_lead", "bent lead": "bent_lead"}


def test_a_seed_lends_its_phrasings_and_its_unlabelled_kinds_are_left_out() -> None:
    seed = load_vocabulary("leather")  # no leather file: default.json, generic kinds
    vocab, _ = vocabulary_from_labels("leather", ["color", "cut", "fold", "glue", "poke"],
                                      seed=seed)  # fmt: skip
    assert vocab.keys == ["color", "cut", "fold", "glue", "poke"]
    assert vocab.kinds["cut"] == seed.kinds["cut"]  # hand-written phrasings kept
    assert vocab.kinds["glue"] == phrasings("glue", "leather") == [
        "glue on the leather", "a leather with glue", "glue"]
    assert "scratch" not in vocab.kinds  # the seed's kind no label names


def test_a_seed_key_in_another_spelling_still_serves_the_folder() -> None:
    seed = Vocabulary("w", "widget", {"Scratch": ["a scratch on the widget"]})
    vocab, key_of = vocabulary_from_labels("w", ["scratches"], seed=seed)
    assert key_of == {"scratches": "scratch"}
    assert vocab.kinds == {"scratch": ["a scratch on the widget"]}


def test_no_label_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no labelled defect kind"):
        vocabulary_from_labels("empty", [])


def test_which_kinds_describe_the_part() -> None:
    from engine.defects.kind_names import describes_the_part

    assert [describes_the_part(k) for k in ("misplaced", "bent", "broken_large", "bent_lead",
                                            "scratch", "contamination", "damaged_case")] == [
        True, True, True, False, False, False, False]
