"""The whole frame contract under hypothesis: parse_frame + decode_frame on arbitrary
records return a frame or raise FrameRejectedError, within bounded memory.

The property runs in a child process (tests/frame_contract_fuzz.py) under an
address-space limit of 1.5 GiB (about 0.5 GiB is the interpreter with numpy and
OpenCV): one decode of the lying JPEG's real 30000x30000 frame needs 2.5 GiB, so an
image the contract let through at the wrong size cannot pass unseen, and an
out-of-memory in the child fails the test instead of the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[4]
EXAMPLES = 1500  # ~15 s of CPU


def test_only_the_frame_error_escapes_and_memory_stays_bounded() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "tests.frame_contract_fuzz", "--examples", str(EXAMPLES),
         "--address-space", str(1536 * 1024**2)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # libjpeg and libpng warn on stderr about every corrupt file: show only the verdict.
    tail = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                     if not line.startswith(("Corrupt JPEG", "[ WARN", "Premature")))[-6000:]
    assert done.returncode == 0, tail
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(report)
    outcomes = report["outcomes"]
    assert report["examples"] == EXAMPLES
    # The records reach every stage: accepted and decoded, refused by each check.
    assert outcomes["decoded"] >= EXAMPLES // 20
    for reason in ("parse:invalid_headers", "parse:unsupported_schema", "parse:empty",
                   "parse:pixel_budget", "parse:undecodable", "decode:undecodable"):
        assert outcomes.get(reason, 0) > 0, f"no example reached {reason}: {outcomes}"
    assert report["peak_rss_bytes"] < 512 * 1024**2
