"""Synthetic defects whose generic kind is known because we drew them (engine.defects.defect_kinds).

Training data for the default describer: one drawing per generic kind, on normal
images of any product, so it learns what a scratch or a stain looks like without a
label from the target line. Each drawing imitates what the kind does to pixels:
a thin straight or gently curved line lighter or darker than the surface (scratch), a
jagged dark line that keeps a general direction, often branching (crack), a dark round
pit (hole), a warped and shaded area (dent), a foreign texture, particle or fibre
(contamination), a colour shift that keeps the texture, a wide soft patch or a small
sharp spot (stain),
a piece replaced by the background (missing part), a shifted copy of the part
(misplaced part), a short straight dark slit (cut), a long shaded ridge (fold) and
stray characters (print). All randomness comes from the caller's Generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from engine.training.synthetic import _blob_mask, _centre, _random_crop, foreground_mask

Donors = Sequence[np.ndarray]
Drawn = tuple[np.ndarray, np.ndarray]  # (image, mask)
Drawing = Callable[[np.ndarray, np.random.Generator, Donors], Drawn]


def _shade(image: np.ndarray, alpha: np.ndarray, gain: float | np.ndarray,
           offset: float | np.ndarray = 0.0) -> np.ndarray:  # fmt: skip
    """image * gain + offset where alpha (0..1) is set: keeps the surface's texture."""
    img = image.astype(np.float32)
    a = alpha.astype(np.float32)[..., None]
    out = img * (1 - a) + (img * gain + offset) * a
    return np.clip(out, 0, 255).astype(np.uint8)


def _background(image: np.ndarray) -> np.ndarray:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.float32)


def _walk(start: tuple[float, float], angle: float, steps: int, step: float, turn: float,
          rng: np.random.Generator) -> list[tuple[int, int]]:  # fmt: skip
    pts, (x, y) = [(int(start[0]), int(start[1]))], start
    for _ in range(steps):
        angle += rng.uniform(-turn, turn)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        pts.append((int(x), int(y)))
    return pts


def _lines(shape: tuple[int, int], paths: list[list[tuple[int, int]]], thick: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for p in paths:
        cv2.polylines(mask, [np.array(p, np.int32)], False, 1, thick, cv2.LINE_8)
    return mask


def draw_scratch(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    steps = int(rng.integers(4, 9))
    # straight or gently curved: what tells a scratch from a crack's zigzag
    turn = float(rng.uniform(0.0, 0.12))
    path = _walk((cx, cy), rng.uniform(0, 2 * np.pi), steps,
                 rng.uniform(0.12, 0.35) * side / steps, turn, rng)  # fmt: skip
    mask = _lines((h, w), [path], max(1, int(rng.uniform(0.004, 0.02) * side)))
    if rng.random() < 0.5:  # metal and plastic scratches catch the light
        out = _shade(image, mask, 1.0, float(rng.uniform(50, 120)))
    else:  # or show a dark groove, down to nearly black on a bright surface
        out = _shade(image, mask, float(rng.uniform(0.05, 0.65)))
    return out, mask


def _zigzag(start: tuple[float, float], angle: float, steps: int, step: float, jitter: float,
            rng: np.random.Generator) -> list[tuple[int, int]]:  # fmt: skip
    """A jagged line that keeps a general direction: each step leaves it by up to
    `jitter` radians (not accumulated, as a random walk's turns are), the direction
    itself drifting slowly."""
    pts, (x, y) = [(int(start[0]), int(start[1]))], start
    for _ in range(steps):
        angle += rng.uniform(-0.15, 0.15)
        a = angle + rng.uniform(-jitter, jitter)
        x, y = x + step * np.cos(a), y + step * np.sin(a)
        pts.append((int(round(x)), int(round(y))))
    return pts


def draw_crack(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    step = rng.uniform(0.008, 0.02) * side
    main = _zigzag((cx, cy), rng.uniform(0, 2 * np.pi), int(rng.integers(10, 40)), step,
                   float(rng.uniform(0.4, 0.9)), rng)  # fmt: skip
    paths = [main]
    for _ in range(int(rng.integers(0, 4))):  # branches leave the main line at an angle
        x, y = main[int(rng.integers(1, len(main)))]
        paths.append(_zigzag((x, y), rng.uniform(0, 2 * np.pi), int(rng.integers(3, 12)),
                             step * 0.8, float(rng.uniform(0.4, 0.9)), rng))  # fmt: skip
    mask = _lines((h, w), paths, max(1, int(rng.uniform(0.003, 0.012) * side)))
    return _shade(image, mask, float(rng.uniform(0.1, 0.5))), mask


def draw_hole(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    r = max(2, int(rng.uniform(0.012, 0.05) * side))
    axes = (r, max(2, int(r * rng.uniform(0.7, 1.0))))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    # darkest in the middle: a pit, not a printed dot
    depth = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, r / 2)) * mask
    depth = depth / max(float(depth.max()), 1e-6)
    gain = 1.0 - depth * rng.uniform(0.7, 0.95)
    out = np.clip(image.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
    return out, mask


def draw_dent(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    r = max(4, int(rng.uniform(0.05, 0.12) * side))
    mask = _blob_mask((h, w), cx, cy, r, rng)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    dist = np.sqrt(dx**2 + dy**2) / (2 * r)
    pull = np.exp(-(dist**2) * 4) * rng.uniform(0.15, 0.35) * r  # pixels pulled to the centre
    norm = np.maximum(np.sqrt(dx**2 + dy**2), 1e-3)
    warped = cv2.remap(image, xs + pull * dx / norm, ys + pull * dy / norm, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
    light = rng.uniform(0, 2 * np.pi)  # one flank lit, the other in shadow
    ramp = (np.cos(light) * dx + np.sin(light) * dy) / r
    shaded = warped.astype(np.float32) + (np.clip(ramp, -1, 1) * rng.uniform(20, 50))[..., None]
    out = image.copy()
    sel = mask > 0
    out[sel] = np.clip(shaded[sel], 0, 255).astype(np.uint8)
    return out, mask


def draw_contamination(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    style = rng.random()
    out = image.copy()
    if style < 0.3:  # a fibre or thread lying on the surface, in a colour of its own
        steps = int(rng.integers(6, 12))
        path = _walk((cx, cy), rng.uniform(0, 2 * np.pi), steps,
                     rng.uniform(0.15, 0.4) * side / steps, 0.5, rng)  # fmt: skip
        mask = _lines((h, w), [path], max(2, int(rng.uniform(0.008, 0.02) * side)))
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        patch = np.broadcast_to(colour, image.shape) + rng.normal(0, 12, image.shape)
    else:
        r = max(3, int(rng.uniform(0.02, 0.08) * side))
        mask = _blob_mask((h, w), cx, cy, r, rng)
        if style < 0.65:  # a particle: flat colour, grainy
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            patch = np.broadcast_to(colour, image.shape) + rng.normal(0, 18, image.shape)
        else:  # foreign material with a texture of its own
            src = donors[int(rng.integers(len(donors)))] if donors else image
            patch = _random_crop(src, h, w, rng).astype(np.float32)
            patch = cv2.cvtColor(patch.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
            patch[..., 0] = (patch[..., 0] + int(rng.integers(30, 150))) % 180
            patch = cv2.cvtColor(patch.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    sel = mask > 0
    out[sel] = np.clip(patch[sel], 0, 255).astype(np.uint8)
    return out, mask


# the share of stains drawn dark and tinted when asked for (describer_default --dark-stains)
DARK_TINT = 0.15
# the share of stains drawn faded when asked for (describer_default --faded-stains)
FADED = 0.25


def _fade(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A faded or bleached patch: colour drawn towards its own grey, lighter as a rule
    (sun, a solvent, abrasion of a dyed surface), the texture kept. Multiplied tints
    seldom lower the saturation much (5% of the drawn stains by more than 0.1 of its
    range), and a real colour defect (MVTec leather's: 0.23) does."""
    img = image.astype(np.float32)
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    gain = rng.uniform(1.1, 1.7) if rng.random() < 0.7 else rng.uniform(0.7, 0.95)
    faded = (img + rng.uniform(0.4, 0.95) * (grey[..., None] - img)) * gain
    a = alpha.astype(np.float32)[..., None]
    return np.clip(img * (1 - a) + faded * a, 0, 255).astype(np.uint8)


def draw_stain(image: np.ndarray, rng: np.random.Generator, donors: Donors = (),
               dark_tint: float = 0.0, faded: float = 0.0) -> Drawn:  # fmt: skip
    """`dark_tint`: the share of stains darker in every channel by its own factor (rust,
    oil, a burn); `faded`: the share drawn towards grey (`_fade`); both taken from the
    tinted stains, and both 0 keep the draws of the stains made before the options."""
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    spot = rng.random() < 0.4  # a small sharp-edged spot (a drop, a colour fleck)
    r = max(3, int(rng.uniform(0.02, 0.06) * side)) if spot else \
        max(4, int(rng.uniform(0.05, 0.15) * side))  # fmt: skip
    blob = _blob_mask((h, w), cx, cy, r, rng).astype(np.float32)
    soft = rng.uniform(0.5, 1.5) if spot else max(1.0, r / 6)
    alpha = cv2.GaussianBlur(blob, (0, 0), soft) * rng.uniform(0.8, 1.0)
    gain = rng.uniform(0.2, 1.6, size=3)  # a tint: channels change by different factors
    style = rng.random()
    if style < 0.4:  # or just darker / lighter, as worn or wet patches are
        gain = np.full(3, rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.3, 1.6)]))
    elif style < 0.4 + dark_tint:  # or dark and tinted: every channel darker
        gain = rng.uniform(0.25, 0.7) * rng.uniform(0.3, 1.0, size=3)
    elif style < 0.4 + dark_tint + faded:
        return _fade(image, alpha, rng), (alpha > 0.3).astype(np.uint8)
    # multiplied (plus a small offset so a dark surface can still change colour): the
    # surface's texture shows through, which tells a stain from foreign material on top
    offset = rng.uniform(-20, 40, size=3) * (gain != gain[0]).any()
    out = _shade(image, alpha, gain.astype(np.float32), offset.astype(np.float32))
    return out, (alpha > 0.3).astype(np.uint8)


def draw_missing_part(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    fg = foreground_mask(image)
    r = max(4, int(rng.uniform(0.06, 0.15) * side))
    if fg.mean() < 0.95:  # an object on a background: bite a piece off its outline
        edge = fg - cv2.erode(fg, np.ones((3, 3), np.uint8))
        cx, cy = _centre(edge if edge.any() else fg, rng)
        fill = _background(image)
        mask = _blob_mask((h, w), cx, cy, r, rng) * fg
    else:  # a texture fills the frame: a gap through which the dark underside shows
        cx, cy = _centre(fg, rng)
        fill = np.full(3, rng.uniform(0, 40), np.float32)
        mask = _blob_mask((h, w), cx, cy, r, rng)
    patch = np.broadcast_to(fill, image.shape) + rng.normal(0, 4, image.shape)
    out = image.copy()
    sel = mask > 0
    out[sel] = np.clip(patch[sel], 0, 255).astype(np.uint8)
    return out, mask.astype(np.uint8)


def draw_misplaced_part(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    fg = foreground_mask(image)
    cx, cy = _centre(fg, rng)
    r = max(4, int(rng.uniform(0.06, 0.14) * side))
    shift = rng.uniform(0.08, 0.2) * side
    ang = rng.uniform(0, 2 * np.pi)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(-30, 30)), 1.0)
    m[:, 2] += (shift * np.cos(ang), shift * np.sin(ang))
    moved = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    src = np.zeros((h, w), np.uint8)
    cv2.ellipse(src, (cx, cy), (r, int(r * rng.uniform(0.5, 1.0))), float(rng.uniform(0, 180)),
                0, 360, 1, -1)  # fmt: skip
    mask = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_NEAREST)
    out = image.copy()
    sel = mask > 0
    out[sel] = moved[sel]
    return out, mask


def draw_cut(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    half = rng.uniform(0.03, 0.09) * side  # short: a longer straight line is a scratch
    ang = rng.uniform(0, np.pi)
    a = (int(cx - half * np.cos(ang)), int(cy - half * np.sin(ang)))
    b = (int(cx + half * np.cos(ang)), int(cy + half * np.sin(ang)))
    thick = max(2, int(rng.uniform(0.008, 0.02) * side))
    mask = np.zeros((h, w), np.uint8)
    cv2.line(mask, a, b, 1, thick, cv2.LINE_8)
    lip = np.zeros((h, w), np.uint8)  # the lit lip of the slit, along one side
    off = (int(round(-np.sin(ang) * thick)), int(round(np.cos(ang) * thick)))
    cv2.line(lip, (a[0] + off[0], a[1] + off[1]), (b[0] + off[0], b[1] + off[1]), 1,
             max(1, thick // 2), cv2.LINE_8)  # fmt: skip
    lip = lip * (1 - mask)
    out = _shade(image, mask, float(rng.uniform(0.05, 0.3)))
    out = _shade(out, lip, 1.0, float(rng.uniform(30, 70)))
    return out, np.maximum(mask, lip)


def draw_fold(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    steps = 8
    path = _walk((cx, cy), rng.uniform(0, 2 * np.pi), steps,
                 rng.uniform(0.3, 0.6) * side / steps, 0.12, rng)  # fmt: skip
    width = max(3, int(rng.uniform(0.02, 0.05) * side))
    band = _lines((h, w), [path], width)
    ridge = _lines((h, w), [path], 1)
    # signed side of the ridge: one flank lit, the other in shadow
    lit = cv2.dilate(ridge, np.ones((3, 3), np.uint8), iterations=max(1, width // 4))
    shift = np.roll(lit, (width // 3, width // 3), axis=(0, 1))
    light = band * shift
    dark = band * (1 - shift)
    out = _shade(image, cv2.GaussianBlur(light.astype(np.float32), (0, 0), 1.0), 1.0,
                 float(rng.uniform(30, 60)))  # fmt: skip
    out = _shade(out, cv2.GaussianBlur(dark.astype(np.float32), (0, 0), 1.0),
                 float(rng.uniform(0.5, 0.75)))  # fmt: skip
    return out, band


def draw_print(image: np.ndarray, rng: np.random.Generator, donors: Donors = ()) -> Drawn:
    h, w = image.shape[:2]
    side = min(h, w)
    cx, cy = _centre(foreground_mask(image), rng)
    letters = "ABCDEFGHKMNPRSTX0123456789"
    picks = rng.integers(len(letters), size=int(rng.integers(2, 5)))
    text = "".join(letters[int(i)] for i in picks)
    scale = rng.uniform(0.002, 0.006) * side
    thick = max(1, int(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    org = (int(np.clip(cx - tw // 2, 0, max(0, w - tw))), int(np.clip(cy + th // 2, th, h - 1)))
    mask = np.zeros((h, w), np.uint8)
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 1, thick, cv2.LINE_8)
    if rng.random() < 0.5:  # smudged: ink dragged sideways
        k = int(rng.integers(3, 8))
        mask = cv2.dilate(mask, np.ones((1, k), np.uint8))
    colour = np.array([rng.uniform(0, 60), rng.uniform(0, 60), rng.uniform(0, 120)], np.float32)
    if rng.random() < 0.5:
        colour = rng.permutation(colour)
    paint = np.broadcast_to(colour, image.shape)
    a = mask.astype(np.float32)[..., None] * rng.uniform(0.7, 1.0)
    out = np.clip(image.astype(np.float32) * (1 - a) + paint * a, 0, 255).astype(np.uint8)
    return out, mask


DRAWINGS: dict[str, Drawing] = {
    "scratch": draw_scratch, "crack": draw_crack, "hole": draw_hole, "dent": draw_dent,
    "contamination": draw_contamination, "stain": draw_stain,
    "missing_part": draw_missing_part, "misplaced_part": draw_misplaced_part,
    "cut": draw_cut, "fold": draw_fold, "print": draw_print,
}  # fmt: skip

def draw_defect(image: np.ndarray, kind: str, rng: np.random.Generator,
                donors: Sequence[np.ndarray] = (), dark_tint: float = 0.0, faded: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One drawn defect of a generic kind on an HxWx3 uint8 image -> (image, mask {0,1});
    `dark_tint`, `faded`: draw_stain's shares of dark tinted and of faded stains."""
    if kind not in DRAWINGS:
        raise ValueError(f"no drawing for defect kind {kind!r}; kinds: {sorted(DRAWINGS)}")
    if kind == "stain":
        out, mask = draw_stain(image, rng, donors, dark_tint, faded)
    else:
        out, mask = DRAWINGS[kind](image, rng, donors)
    return out, (mask > 0).astype(np.uint8)
