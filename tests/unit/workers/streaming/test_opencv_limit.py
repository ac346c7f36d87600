"""OpenCV's pixel limit is set from CLAD_MAX_FRAME_PIXELS before the worker loads cv2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.streaming.opencv_limit import OpenCvLoadedError, limit_opencv_pixels

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[4]

# `clad worker` as the CLI runs it, with run_worker replaced by a probe: what the
# environment says when the worker starts, whether cv2 was loaded before, and what
# OpenCV does with a JPEG whose real size (3000x2000 = 6 Mpx) is above the budget.
_PROBE = """
import json, os, sys, types
probe = types.ModuleType("workers.streaming.runner")
def run_worker(settings, stop=None):
    loaded_before = "cv2" in sys.modules
    import cv2, numpy as np
    from tests.frame_bombs import lying_jpeg
    try:
        image = cv2.imdecode(np.frombuffer(lying_jpeg((3000, 2000)), np.uint8),
                             cv2.IMREAD_COLOR)
        outcome = "decoded" if image is not None else "none"
    except cv2.error as exc:
        outcome = "refused" if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) else str(exc)
    print(json.dumps({"env": os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"),
                      "cv2_loaded_before": loaded_before, "outcome": outcome}))
probe.run_worker = run_worker
sys.modules["workers.streaming.runner"] = probe
from workers.cli.main import main
sys.argv = ["clad", "worker"]
main()
"""


def _worker_probe(max_pixels: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLAD_") and k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env.update(CLAD_MAX_FRAME_PIXELS=str(max_pixels), CLAD_BOOTSTRAP_SERVERS="127.0.0.1:9",
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_worker_command_sets_the_limit_before_cv2_is_loaded() -> None:
    probe = _worker_probe(1_000_000)
    assert probe == {"env": "1000000", "cv2_loaded_before": False, "outcome": "refused"}


def test_within_the_budget_the_same_file_decodes() -> None:
    assert _worker_probe(10_000_000)["outcome"] == "decoded"


def test_setting_the_limit_after_cv2_is_loaded_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2  # noqa: F401 - loaded, as in this test process

    monkeypatch.delenv("OPENCV_IO_MAX_IMAGE_PIXELS", raising=False)
    with pytest.raises(OpenCvLoadedError, match="before OPENCV_IO_MAX_IMAGE_PIXELS"):
        limit_opencv_pixels(1_000_000)
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" not in os.environ
