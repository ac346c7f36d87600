"""The generic defect kinds the default describer names, and the table that maps every
defect folder of the data sets we know (MVTec AD, magnetic tile) to one of them.

The keys are those of engine/defects/vocab/default.json (its phrasings); `LABELS` is how a
person reads a kind. A folder mapped to None ("combined", "good") is too mixed to
teach one kind and is left out of training. The reasoning for the judgement calls is
in engine/defects/NOTES.md ("Generic defect kinds").
"""

from __future__ import annotations

LABELS: dict[str, str] = {
    "scratch": "scratch",
    "crack": "crack",
    "hole": "hole or puncture",
    "dent": "dent or deformation",
    "contamination": "contamination or foreign material",
    "stain": "stain or discolouration",
    "missing_part": "missing or broken part",
    "misplaced_part": "misplaced or extra part",
    "cut": "cut",
    "fold": "fold or wrinkle",
    "print": "print defect",
}
GENERIC_KINDS: tuple[str, ...] = tuple(LABELS)
UNCLEAR = "unclear"  # the kind a region gets when no kind is confident enough
UNCLEAR_TEXT = "unclear defect"
# kinds whose pixels look alike, so that a describer unsure of the kind can still be sure
# of its group and say "a scratch or a cut" (engine.defects.describer.mark_unclear): a
# thin line (a straight crack is a scratch by its pixels), a compact spot, a deformed
# surface, a part gone or out of place
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "line": ("scratch", "crack", "cut"),
    "spot": ("hole", "stain", "contamination"),
    "deformation": ("dent", "fold"),
    "part": ("missing_part", "misplaced_part"),
    "print": ("print",),
}


def kind_group(kind: str) -> str:
    """The group of a kind (KIND_GROUPS); a kind outside them is a group of its own."""
    return next((g for g, kinds in KIND_GROUPS.items() if kind in kinds), kind)

# category folder -> {defect folder -> generic kind}
FOLDER_KINDS: dict[str, dict[str, str | None]] = {
    # in /work/shared/data
    "magnetic_tile": {"blowhole": "hole", "break": "missing_part", "crack": "crack",
                      "fray": "stain", "uneven": "dent"},
    "leather": {"color": "stain", "cut": "cut", "fold": "fold", "glue": "contamination",
                "poke": "hole"},
    "transistor": {"bent_lead": "dent", "cut_lead": "cut", "damaged_case": "missing_part",
                   "misplaced": "misplaced_part"},
    "bottle": {"broken_large": "missing_part", "broken_small": "missing_part",
               "contamination": "contamination"},
    "capsule": {"crack": "crack", "faulty_imprint": "print", "poke": "hole",
                "scratch": "scratch", "squeeze": "dent"},
    "grid": {"bent": "dent", "broken": "missing_part", "glue": "contamination",
             "metal_contamination": "contamination", "thread": "contamination"},
    # the rest of MVTec AD, for a user who points the trainer at the full set
    "cable": {"bent_wire": "dent", "cable_swap": "misplaced_part", "combined": None,
              "cut_inner_insulation": "cut", "cut_outer_insulation": "cut",
              "missing_cable": "missing_part", "missing_wire": "missing_part",
              "poke_insulation": "hole"},
    "carpet": {"color": "stain", "cut": "cut", "hole": "hole",
               "metal_contamination": "contamination", "thread": "contamination"},
    "hazelnut": {"crack": "crack", "cut": "cut", "hole": "hole", "print": "print"},
    "metal_nut": {"bent": "dent", "color": "stain", "flip": "misplaced_part",
                  "scratch": "scratch"},
    "pill": {"color": "stain", "combined": None, "contamination": "contamination",
             "crack": "crack", "faulty_imprint": "print", "pill_type": "stain",
             "scratch": "scratch"},
    "screw": {"manipulated_front": "dent", "scratch_head": "scratch",
              "scratch_neck": "scratch", "thread_side": "dent", "thread_top": "dent"},
    "tile": {"crack": "crack", "glue_strip": "contamination", "gray_stroke": "stain",
             "oil": "stain", "rough": "dent"},
    "toothbrush": {"defective": "missing_part"},
    "wood": {"color": "stain", "combined": None, "hole": "hole", "liquid": "stain",
             "scratch": "scratch"},
    "zipper": {"broken_teeth": "missing_part", "combined": None, "fabric_border": "fold",
               "fabric_interior": "fold", "rough": "dent", "split_teeth": "misplaced_part",
               "squeezed_teeth": "dent"},
}


def generic_kind(category: str, folder: str) -> str | None:
    """The generic kind of a defect folder; a folder name that is itself a generic
    kind maps to it on any product; None when unknown or too mixed."""
    known = FOLDER_KINDS.get(category, {})
    if folder in known:
        return known[folder]
    return folder if folder in LABELS else None
