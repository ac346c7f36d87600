"""Prompt ensembles per product: normal vs defect texts (WinCLIP-style compositional prompts).

A product is described by the name of the object and, optionally, its known defect kinds.
Averaging many phrasings gives a steadier text prototype than any one sentence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of the {}.",
    "an industrial photo of a {}.",
    "a cropped photo of the {}.",
    "a photo of the {} on a production line.",
)
NORMAL_STATES: tuple[str, ...] = (
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "good {}",
)
DEFECT_STATES: tuple[str, ...] = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
    "defective {}",
)
# Generic defect kinds; product-specific ones are appended from PRODUCTS below.
DEFECT_KINDS: tuple[str, ...] = (
    "a crack",
    "a scratch",
    "a hole",
    "contamination",
    "a stain",
    "a dent",
)

# Object names (what the text encoder understands) and defect kinds for known products.
PRODUCTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bottle": ("bottle", ("a broken rim", "contamination")),
    "capsule": ("capsule", ("a crack", "a poke", "a squeezed shape", "faulty imprint")),
    "grid": ("metal grid", ("a bent wire", "a broken wire", "glue", "a thread")),
    "magnetic_tile": ("magnetic tile", ("a blowhole", "a crack", "a fray", "uneven surface")),
    "carpet": ("carpet", ("a hole", "a cut", "a thread")),
    "screw": ("screw", ("a scratched thread", "a damaged tip")),
}


@dataclass(frozen=True)
class PromptSet:
    """The texts for one product, as stored with a trained model (prompts.json)."""

    category: str
    object_name: str
    normal: list[str] = field(default_factory=list)
    defect: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PromptSet:
        return cls(
            category=str(data["category"]),
            object_name=str(data["object_name"]),
            normal=list(data["normal"]),  # type: ignore[arg-type]
            defect=list(data["defect"]),  # type: ignore[arg-type]
        )


def object_name(category: str) -> str:
    """A readable object name: the known one, else the folder name with '_' as spaces."""
    known = PRODUCTS.get(category)
    return known[0] if known else category.replace("_", " ")


def build_prompts(category: str, object_label: str | None = None) -> PromptSet:
    """Compose the normal and defect prompt ensembles for one product."""
    obj = object_label or object_name(category)
    kinds = DEFECT_KINDS + PRODUCTS.get(category, (obj, ()))[1]
    normal = [t.format(s.format(obj)) for t in TEMPLATES for s in NORMAL_STATES]
    defect = [t.format(s.format(obj)) for t in TEMPLATES for s in DEFECT_STATES]
    # "a photo of a bottle with a crack": the defect-kind phrasing the issue asks for.
    defect += [t.format(f"{obj} with {k}") for t in TEMPLATES for k in dict.fromkeys(kinds)]
    return PromptSet(category=category, object_name=obj, normal=normal, defect=defect)
