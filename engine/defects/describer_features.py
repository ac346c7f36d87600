"""The patch embeddings a describer reads, when the product model does not compute them
(or, for the default describer of engine.defects.shape_describer, the frame's pixels).

A product's own describer is trained on its model's patch embeddings, so the worker
hands it those. The default describer was trained on features of its own (recorded in
describer.json: backbone, stages, input size, pool); a product model that computes the
same ones lends them, any other gets this encoder's, run only on frames with regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.defects.describer import frame_patch_embeddings
from engine.defects.describer_artifacts import LoadedDescriber
from engine.defects.shape_describer import PIXELS, pixel_input
from engine.scoring.runtime_model import CladRuntime
from engine.scoring.visual_encoder import VisualEncoder


class DescriberEncoder:
    """uint8 NHWC frames -> the patch embeddings a describer was trained on."""

    def __init__(self, features: dict[str, Any]) -> None:
        self.pixels = features.get("encoder") == PIXELS  # the default describer reads pixels
        if self.pixels:
            return
        if "backbone" not in features or "stages" not in features:
            raise ValueError("the describer does not record its encoder (backbone, stages); "
                             "it reads its product model's embeddings")  # fmt: skip
        enc = VisualEncoder(str(features["backbone"]), tuple(int(s) for s in features["stages"]))
        # a bank-less runtime: only its preprocess (resize + ImageNet normalisation) is used
        self.runtime = CladRuntime(enc, torch.zeros(1, sum(enc.channels)), 1.0,
                                   input_size=int(features["input_size"]),
                                   pool=int(features["pool"]))  # fmt: skip

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        if self.pixels:
            return pixel_input(frames)
        rt = self.runtime
        return frame_patch_embeddings(rt.encoder, rt.preprocess,
                                      torch.from_numpy(np.ascontiguousarray(frames)), rt.pool)


def reads_runtime_features(loaded: LoadedDescriber, runtime: Any) -> bool:
    """True when the product model computes the embeddings the describer expects."""
    f = loaded.features
    if f.get("encoder") == PIXELS:  # no model computes its input: the frame is its input
        return False
    enc = getattr(runtime, "encoder", None)
    if enc is None or sum(getattr(enc, "channels", ())) != loaded.describer.in_channels:
        return False
    if "stages" not in f:  # a product describer: trained on its own model's embeddings
        return True
    return (int(f["input_size"]) == int(runtime.input_size) and int(f["pool"]) == int(runtime.pool)
            and f.get("encoder", "").split(":")[1:2] == [str(getattr(enc, "out_blocks", ""))])
