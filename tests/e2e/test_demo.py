"""The README demo command, as a user runs it: one process, embedded everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_scores_every_frame_once_and_writes_overlays(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAD_")}
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "demo", "--out", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "one verdict per frame" in result.stdout
    assert "12 frames published, 12 with a verdict, 0 missing, 0 with more than one" \
        in result.stdout
    run = out / "latest"  # each run keeps its own folder; `latest` is this one
    overlays = sorted((run / "overlays").glob("*.png"))
    assert len(overlays) == 12
    # An overlay is the frame plus colour: same size, visibly different pixels.
    frame_path = run / "synthetic-part" / overlays[0].stem.split("__")[1] / (
        overlays[0].stem.split("__")[2] + ".png")
    frame, overlay = cv2.imread(str(frame_path)), cv2.imread(str(overlays[0]))
    assert frame.shape == overlay.shape
    assert np.abs(frame.astype(int) - overlay.astype(int)).mean() > 5
    # Drawn defects are all flagged and every one outscores every plain part.
    rows = [line.split("│") for line in result.stdout.splitlines() if "synthetic-part/" in line]
    defects = [float(r[2]) for r in rows if "/defect" in r[1]]
    goods = [float(r[2]) for r in rows if "/good" in r[1]]
    assert len(defects) == 6 and len(goods) == 6
    assert all("anomalous" in r[4] for r in rows if "/defect" in r[1])
    # ... and no plain part is, with the threshold calibrated from the references alone.
    assert all("normal" in r[4] and "anomalous" not in r[4] for r in rows if "/good" in r[1])
    assert "threshold calibrated on its references" in result.stdout
    assert min(defects) > max(goods)
    # Every anomalous verdict says where (at least one region), no normal one does.
    assert all(r[5].strip().startswith("#0 ") for r in rows if "anomalous" in r[4])
    assert all(not r[5].strip() for r in rows if "anomalous" not in r[4])
