import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.defects.kind_names import KindNameError, fold_kinds, kind_key, kind_phrase

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("typed", ["scratch", "a scratch", "Scratch ", "  A  SCRATCH.",
                                   "the scratch", "scratch!"])
def test_spellings_of_one_kind_fold_into_one_key(typed: str) -> None:
    assert kind_key(typed) == "scratch"


def test_words_join_with_underscores_as_folder_names_do() -> None:
    assert kind_key("Bent lead") == "bent_lead"
    assert kind_key("bent-lead") == "bent_lead"
    assert kind_key("bent_lead") == "bent_lead"


def test_a_plural_joins_a_known_singular_and_the_other_way_round() -> None:
    assert kind_key("scratches", known=["scratch"]) == "scratch"
    assert kind_key("bent leads", known=["bent_lead"]) == "bent_lead"
    assert kind_key("hole", known=["holes"]) == "holes"
    # unknown: kept as typed, never guessed
    assert kind_key("scratches") == "scratches"
    assert kind_key("glass", known=["glas"]) == "glass"


def test_text_that_names_nothing_or_is_a_sentence_is_refused() -> None:
    for bad in ["", "   ", "a", "the ...", "!!"]:
        with pytest.raises(KindNameError, match="names no defect kind"):
            kind_key(bad)
    with pytest.raises(KindNameError, match="a few words"):
        kind_key("a long scratch that runs from the left edge of the bottle all the way "
                 "to the neck and back")


def test_phrases_read_as_a_person_writes_them() -> None:
    assert kind_phrase("bent_lead") == "a bent lead"
    assert kind_phrase("edge_crack") == "an edge crack"
    assert kind_phrase("contamination") == "contamination"
    assert kind_phrase("metal_contamination") == "metal contamination"
    assert kind_phrase("misplaced") == "misplaced"
    assert kind_phrase("broken") == "broken"
    assert kind_phrase("scratches") == "scratches"
    assert kind_phrase("glass") == "a glass"


def test_fold_kinds_gives_near_duplicates_one_key() -> None:
    out = fold_kinds(["Scratch ", "a scratch", "scratches", "Bent lead", "bent leads"],
                     known=["crack"])
    assert out == {"Scratch ": "scratch", "a scratch": "scratch", "scratches": "scratch",
                   "Bent lead": "bent_lead", "bent leads": "bent_lead"}


@given(st.text(max_size=80))
def test_a_key_is_its_own_key_and_any_text_gives_a_key_or_the_named_error(text: str) -> None:
    try:
        key = kind_key(text)
    except KindNameError:
        return
    assert kind_key(key) == key
    assert kind_key(kind_phrase(key)) == key
    assert key == key.lower() and " " not in key and key
