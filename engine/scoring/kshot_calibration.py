"""A k-shot model's threshold from its own references, with no hand-set number.

Normal scores the model never saw in its bank:
  - leave-one-out (K >= 2): reference i scored against a bank built from the
    other K - 1, in the full model's score unit (its scale), so a frame of a new,
    normal part is what sets the bar;
  - held-out views of every reference (small shifts and rotations that are not
    in the bank), which covers pose jitter, and K = 1.
engine.scoring.calibration.calibrate then picks the threshold for a 1% false-alarm rate
on those scores (with this few, just above the highest), and the region threshold
by the same rule on the peaks of those frames' pixel maps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold, calibrate
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder

log = logging.getLogger(__name__)

# (dx px, dy px, degrees) at the model's input size: between the bank's own augmentations.
HELD_OUT_POSES = ((2, 0, 2.5), (-2, 2, -2.5), (0, -2, 1.0))


def held_out_views(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    out = []
    for dx, dy, angle in HELD_OUT_POSES:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[:, 2] += (dx * w / 320, dy * h / 320)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101))
    return out


@torch.no_grad()
def _score(runtime: CladRuntime, images: Sequence[np.ndarray]
           ) -> tuple[list[float], list[np.ndarray]]:
    """(image scores, pixel maps) of the images."""
    s = runtime.input_size
    small = [cv2.resize(i, (s, s), interpolation=cv2.INTER_AREA) for i in images]
    outs = [runtime(torch.from_numpy(np.stack(small[i:i + 8]))) for i in range(0, len(small), 8)]
    return ([float(v) for o in outs for v in o.scores],
            [m.numpy() for o in outs for m in o.maps])


def calibrated_runtime(references: Sequence[np.ndarray], config: ScoringConfig,
                       encoder: VisualEncoder) -> tuple[CladRuntime, Threshold]:
    """The k-shot runtime from all references and its image and region thresholds from
    unseen normals."""
    refs = list(references)
    runtime = build_runtime(refs, config, encoder=encoder)
    normal, maps = _score(runtime, [v for r in refs for v in held_out_views(r)])
    if len(refs) >= 2:
        for i, ref in enumerate(refs):
            others = build_runtime(refs[:i] + refs[i + 1:], config, encoder=encoder)
            others.scale.copy_(runtime.scale)  # the full model's units
            others.pixel_scale.copy_(runtime.pixel_scale)
            score, amap = _score(others, [ref])
            normal += score
            maps += amap
    threshold = calibrate(np.array(normal), normal_maps=maps)
    log.info("calibrated threshold %.3f, region threshold %.3f from %s unseen-normal frames "
             "(max score %.3f)", threshold.value, threshold.pixel, len(normal), max(normal))
    return runtime, threshold
