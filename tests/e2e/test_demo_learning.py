"""`clad demo --images` on an MVTec-layout folder runs the learning pass as a user sees
it: an operator names half of each defect folder's regions over HTTP, the describer is
retrained and promoted, the worker reloads it and the held-back half is scored again
with the folders' kinds (issue 29 item 7). The folder is drawn: a striped part, a
bright streak or a dark blot, four of each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SIZE = 128


def _part(seed: int, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(BGR image, ground-truth mask) of a striped part with its drawn defect."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 120, np.uint8)
    for x in range(0, SIZE, 8):
        img[:, x:x + 2] = 95
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if kind == "bright_streak":
        x0, y0 = (int(v) for v in rng.integers(15, 50, 2))
        angle = rng.uniform(0, np.pi)
        end = (min(int(x0 + 55 * np.cos(angle) + 30), 115),
               min(int(y0 + 55 * abs(np.sin(angle)) + 20), 115))
        for target, value in ((img, (235, 235, 235)), (mask, 255)):
            cv2.line(target, (x0, y0), end, value, 3)
    elif kind == "dark_blot":
        centre, radius = tuple(int(v) for v in rng.integers(30, 98, 2)), int(rng.integers(8, 12))
        for target, value in ((img, (35, 35, 35)), (mask, 255)):
            cv2.circle(target, centre, radius, value, -1)
    return img, mask


def _category(root: Path) -> Path:
    cat = root / "tile"
    for folder, kind, count, first in (("train/good", None, 4, 0), ("test/good", None, 2, 10),
                                       ("test/bright_streak", "bright_streak", 4, 20),
                                       ("test/dark_blot", "dark_blot", 4, 30)):
        (cat / folder).mkdir(parents=True)
        if kind:
            (cat / "ground_truth" / kind).mkdir(parents=True)
        for i in range(count):
            img, mask = _part(first + i, kind)
            cv2.imwrite(str(cat / folder / f"{i:03d}.png"), img)
            if kind:
                cv2.imwrite(str(cat / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return root


def test_demo_learns_the_folders_kinds_from_an_operator(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAD_")}
    env["COLUMNS"] = "160"  # one table row per line
    images = _category(tmp_path / "images")
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "demo", "--images",
                             str(images), "--out", str(tmp_path / "demo")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=1200)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "an operator labelled 4 defect images through the HTTP API" in out
    assert re.search(r"describer tile: promoted", out), out[-3000:]
    rows = {tuple(c.strip() for c in line.split("│")[1:3]): [c.strip() for c in
                                                             line.split("│")[3:8]]
            for line in out.splitlines() if line.count("│") >= 8}
    before, after = rows[("all", "before")], rows[("all", "after")]
    print(f"held-back regions before {before}, after {after}")
    regions = int(after[0])
    assert regions > 0 and int(before[0]) == regions
    assert before[4].startswith("0 ")  # nobody had named the kinds
    assert int(after[1]) == regions  # every region names a kind
    assert int(after[4].split()[0]) >= regions * 3 // 4  # ... its folder's, nearly all
