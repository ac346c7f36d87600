from __future__ import annotations

from engine.defects.defect_kinds import FOLDER_KINDS, GENERIC_KINDS, LABELS, generic_kind
from engine.defects.vocabulary import load_vocabulary


def test_generic_kinds_are_the_default_vocabulary() -> None:
    vocab = load_vocabulary("wooden_pallet")  # no own vocabulary: the shipped default
    assert vocab.keys == list(GENERIC_KINDS)
    assert len(GENERIC_KINDS) == 11 and set(LABELS) == set(GENERIC_KINDS)
    generic = load_vocabulary("generic")  # the default describer's object-free phrasings
    assert generic.keys == list(GENERIC_KINDS)
    assert all("<object>" not in p and "the part" not in p
               for ps in generic.kinds.values() for p in ps)


def test_every_mapped_folder_names_a_generic_kind_or_none() -> None:
    for category, folders in FOLDER_KINDS.items():
        for folder, kind in folders.items():
            assert kind is None or kind in GENERIC_KINDS, (category, folder, kind)
    assert generic_kind("magnetic_tile", "blowhole") == "hole"
    assert generic_kind("leather", "color") == "stain"
    assert generic_kind("cable", "combined") is None
    assert generic_kind("new_product", "crack") == "crack"  # a generic name maps to itself
    assert generic_kind("new_product", "wobble") is None


def test_the_shared_data_folders_are_all_mapped() -> None:
    shared = {"magnetic_tile": {"blowhole", "break", "crack", "fray", "uneven"},
              "leather": {"color", "cut", "fold", "glue", "poke"},
              "transistor": {"bent_lead", "cut_lead", "damaged_case", "misplaced"},
              "bottle": {"broken_large", "broken_small", "contamination"},
              "capsule": {"crack", "faulty_imprint", "poke", "scratch", "squeeze"},
              "grid": {"bent", "broken", "glue", "metal_contamination", "thread"}}
    for category, folders in shared.items():
        assert {f for f in folders if generic_kind(category, f)} == folders
