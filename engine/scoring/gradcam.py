"""Grad-CAM (eq. 5) of the CLAD text score: which regions make the image unlike "normal".

An explanation mode beside the runtime, not inside it: it needs gradients, so it is not
part of the exported graph. Uses the runtime's own preprocessing, encoder and text branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.scoring.runtime_model import CladRuntime


def gradcam(runtime: CladRuntime, frames: torch.Tensor, level: int = -1) -> torch.Tensor:
    """uint8 NHWC frames -> Grad-CAM maps [N, H, W] in [0, 1] at the frames' size.

    Eq. 5: ReLU(Σ_k α_k A_k), A = activations of the deepest encoder block taken (the
    last conv block), α_k = spatial mean of d(image text anomaly)/dA_k.
    """
    branch = runtime.text_branch
    if branch is None:
        raise ValueError("Grad-CAM explains the text score: the runtime has no text branch")
    n, height, width = frames.shape[:3]
    with torch.enable_grad():
        feats = runtime.encoder.forward_features(runtime.preprocess(frames))
        act = feats[level]
        image_anomaly, _ = branch(feats)
        # autograd.grad leaves the (frozen) parameters' .grad untouched
        (grad,) = torch.autograd.grad(image_anomaly.sum(), act)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # α_k
    cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
    cam = cam.squeeze(1)
    peak = cam.reshape(n, -1).amax(dim=1).clamp_min(1e-12).view(n, 1, 1)
    return cam / peak
