"""`clad describe --mask`: regions printed, overlay PNG of the frame's size written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from workers.cli.describe import register

pytestmark = pytest.mark.unit


def _frame_mask_and_app(tmp_path: Path) -> typer.Typer:
    """frame.png (a dark disc) and mask.png (two regions) in tmp_path; the describe CLI."""
    frame = np.full((120, 160, 3), 90, np.uint8)
    cv2.circle(frame, (40, 40), 12, (20, 20, 20), -1)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:50, 30:50] = 255
    mask[80:100, 100:150] = 255
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    app = typer.Typer()
    register(app)
    return app


def test_describe_with_a_mask_writes_an_overlay(tmp_path: Path) -> None:
    app = _frame_mask_and_app(tmp_path)
    out = tmp_path / "overlay.png"
    result = CliRunner().invoke(app, ["describe", str(tmp_path / "frame.png"), "--mask",
                                      str(tmp_path / "mask.png"), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 region(s)" in result.output and "[1] bbox=(100, 80, 50, 20)" in result.output
    png = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert png is not None and png.shape == (120, 160, 3)


def test_describe_says_what_an_unnamed_region_shows(tmp_path: Path) -> None:
    app = _frame_mask_and_app(tmp_path)
    result = CliRunner().invoke(app, ["describe", str(tmp_path / "frame.png"), "--mask",
                                      str(tmp_path / "mask.png"), "--mm-per-px", "0.1",
                                      "--out", str(tmp_path / "o.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unclear defect" not in result.output
    # the shipped default describer names neither region: each says what it shows
    assert ("'unnamed: a dark patch, 20 by 20 px (2.0 by 2.0 mm), inside, towards the "
            "left' (unclear," in result.output)  # fmt: skip
    assert ("'unnamed: a patch, 50 by 20 px (5.0 by 2.0 mm), inside, towards the bottom "
            "right' (unclear," in result.output)  # fmt: skip
