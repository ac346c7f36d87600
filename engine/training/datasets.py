"""Reader for folders in the MVTec AD layout: CATEGORY/{train/good, test/KIND, ground_truth/KIND}.

k-shot protocol: the references are the first K images (by file name) of train/good,
or of test/good when the category has no train/ folder; those are then left out of
the evaluated set so no image is both reference and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 normal, 1 anomalous
    kind: str
    mask_path: Path | None  # None for normal images (all-zero mask)


@dataclass(frozen=True)
class CategorySplit:
    name: str
    references: list[Path]
    evaluated: list[Sample]
    reference_source: str  # "train/good" or "test/good"


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def find_categories(root: Path) -> list[Path]:
    """Category folders under `root`; `root` itself when it is a category."""
    root = Path(root)
    if (root / "test").is_dir():
        return [root]
    cats = sorted(p for p in root.iterdir() if p.is_dir() and (p / "test").is_dir())
    if not cats:
        raise FileNotFoundError(f"no MVTec-layout category (a folder with test/) under {root}")
    return cats


def _mask_for(cat: Path, kind: str, image: Path) -> Path | None:
    gt = cat / "ground_truth" / kind
    for cand in (gt / f"{image.stem}_mask.png", gt / f"{image.stem}.png"):
        if cand.exists():
            return cand
    return None


def split_category(cat: Path, shots: int) -> CategorySplit:
    """References and evaluated samples of one category under the k-shot protocol."""
    cat = Path(cat)
    train_good = _images(cat / "train" / "good")
    test_good = _images(cat / "test" / "good")
    source, pool = ("train/good", train_good) if train_good else ("test/good", test_good)
    if shots > len(pool):
        raise ValueError(f"{cat.name}: {shots} shots requested, only {len(pool)} in {source}")
    refs = pool[:shots]
    held = set(refs)
    samples: list[Sample] = []
    for kind_dir in sorted(p for p in (cat / "test").iterdir() if p.is_dir()):
        kind = kind_dir.name
        for img in _images(kind_dir):
            if img in held:
                continue
            if kind == "good":
                samples.append(Sample(img, 0, kind, None))
            else:
                samples.append(Sample(img, 1, kind, _mask_for(cat, kind, img)))
    return CategorySplit(cat.name, refs, samples, source)


def load_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """uint8 HWC RGB; area-resized to size x size when given (no aliasing of fine textures)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey files come back as 3 equal channels
    if img is None:
        raise OSError(f"cannot read image {path}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def load_mask(sample: Sample, size: int) -> np.ndarray:
    """Binary uint8 mask size x size (zeros for normal images or a missing mask)."""
    if sample.mask_path is None:
        return np.zeros((size, size), np.uint8)
    m = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise OSError(f"cannot read mask {sample.mask_path}")
    m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    return (m > 127).astype(np.uint8)
