"""What the demo publishes: an MVTec-layout folder, a plain folder, or synthetic parts.

References (k-shot memory bank) are the first K normal images of each product:
train/good when the category has one, else test/good. They are never published,
so no frame is scored against itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.producer import IMAGE_SUFFIXES


@dataclass
class DemoProduct:
    name: str
    references: list[Path]
    frames: list[Path] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _mvtec_product(category: Path, shots: int) -> DemoProduct | None:
    test = category / "test"
    if not test.is_dir():
        return None
    normal = _images(category / "train" / "good") or _images(test / "good")
    refs = normal[:shots]
    frames = [p for kind in sorted(d for d in test.iterdir() if d.is_dir())
              for p in _images(kind) if p not in refs]
    return DemoProduct(category.name, refs, frames) if refs and frames else None


def discover(root: Path, shots: int, max_per_product: int | None = None) -> list[DemoProduct]:
    """MVTec layout (CATEGORY/test/KIND/*.png) or a folder of images (one product)."""
    products = [p for c in sorted(d for d in root.iterdir() if d.is_dir())
                if (p := _mvtec_product(c, shots)) is not None]
    if not products and (p := _mvtec_product(root, shots)) is not None:
        products = [p]
    if not products:
        images = _images(root)
        if len(images) <= shots:
            raise ValueError(f"{root}: no MVTec categories and only {len(images)} images "
                             f"(need more than {shots} references)")
        products = [DemoProduct(root.name or "product", images[:shots], images[shots:])]
    if max_per_product:
        for p in products:
            p.frames = p.frames[:max_per_product]
    return products


# the generic kind (engine.defects.defect_kinds) of each defect the synthetic parts get
DRAWN_KINDS = ("scratch", "stain")


def drawn_kind(frame: Path) -> str | None:
    """The kind synthetic_parts drew on a frame (its file name ends in it), else None."""
    kind = frame.stem.rpartition("-")[2]
    return kind if frame.parent.name == "defect" and kind in DRAWN_KINDS else None


def synthetic_parts(out: Path, shots: int, count: int = 12, size: int = 256,
                    seed: int = 7) -> list[DemoProduct]:
    """Washer-like parts on a conveyor background; half of the frames get a drawn
    defect: a thin dark line across the washer's face (a scratch) or a soft rust-coloured
    patch the surface shows through (a stain). Both are drawn so that a person would
    name them so: the line runs along the face and never into the bore (a line that
    opens into the bore is a cut), and the stain is translucent with soft edges (an
    opaque dark disc, the earlier drawing, is as much a hole or a particle). The kind
    ends the file name (defect/005-scratch.png) so the demo can count the descriptions
    it got right. Written as PNG so they go through the same path as real shots."""
    rng = np.random.default_rng(seed)
    folder = out / "synthetic-part"
    (folder / "good").mkdir(parents=True, exist_ok=True)
    (folder / "defect").mkdir(parents=True, exist_ok=True)
    refs, frames = [], []
    for i in range(shots + count):
        img = np.full((size, size, 3), 60, np.uint8)
        img += rng.integers(0, 8, img.shape, dtype=np.uint8)  # sensor noise
        c = size // 2 + int(rng.integers(-3, 4))
        cv2.circle(img, (c, c), size * 3 // 8, (170, 175, 180), -1, cv2.LINE_AA)
        cv2.circle(img, (c, c), size // 8, (60, 60, 60), -1, cv2.LINE_AA)
        defect = i >= shots and (i - shots) % 2 == 1
        if defect:
            angle = rng.uniform(0, 2 * np.pi)
            r = size * 0.25
            x, y = c + r * np.cos(angle), c + r * np.sin(angle)
            if (i - shots) % 4 == 1:
                img = _scratch(img, x, y, angle + np.pi / 2 + rng.uniform(-0.3, 0.3),
                               rng.uniform(0.06, 0.14) * size)  # fmt: skip
            else:
                img = _stain(img, x, y, rng)
        name = f"{i:03d}-{DRAWN_KINDS[(i - shots) % 4 // 2]}" if defect else f"{i:03d}"
        path = folder / ("defect" if defect else "good") / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        (refs if i < shots else frames).append(path)
    return [DemoProduct("synthetic-part", refs, frames)]


def _scratch(img: np.ndarray, x: float, y: float, direction: float, half: float) -> np.ndarray:
    """A thin dark line centred on (x, y); along the face's tangent it stays on the face."""
    dx, dy = half * np.cos(direction), half * np.sin(direction)
    cv2.line(img, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), (30, 30, 30), 3,
             cv2.LINE_AA)  # fmt: skip
    return img


def _stain(img: np.ndarray, x: float, y: float, rng: np.random.Generator) -> np.ndarray:
    """A rust-coloured patch blended over the surface, soft-edged."""
    alpha = np.zeros(img.shape[:2], np.float32)
    axes = (int(rng.integers(10, 18)), int(rng.integers(7, 12)))
    cv2.ellipse(alpha, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
                cv2.LINE_AA)  # fmt: skip
    alpha = cv2.GaussianBlur(alpha, (0, 0), 3.0)[..., None] * 0.6
    rust = np.array([150, 95, 50], np.float32)
    return (img * (1 - alpha) + rust * alpha).astype(np.uint8)


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
