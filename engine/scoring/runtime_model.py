"""The runtime scoring model: uint8 NHWC frames in, (image scores, anomaly maps) out.

A plain nn.Module with pre- and post-processing inside and every statistic in a
registered buffer, so one ONNX export carries the whole scoring path. Nothing
here imports training code.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.scoring.memory_bank import Metric, nearest_distance
from engine.scoring.visual_encoder import IMAGENET_MEAN, IMAGENET_STD, VisualEncoder


class AnomalyOutput(NamedTuple):
    scores: torch.Tensor  # [N] float, higher = more anomalous, in reference-score units
    maps: torch.Tensor  # [N, H, W] float at the input frame's size


@runtime_checkable
class TextBranch(Protocol):
    """Text (CLAD) side of the score, implemented by engine.scoring.heads.

    Called with the visual encoder's feature maps (`VisualEncoder.forward_features`
    output, NCHW, ImageNet-normalised input) and returns
    (image_text_anomaly [N] in [0, 1], patch_text_anomaly [N, h, w] in [0, 1]) where
    (h, w) is the grid of features[0]. Must be an nn.Module so it exports with us.
    """

    def __call__(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...


def patch_embeddings(feats: list[torch.Tensor], pool: int = 3) -> torch.Tensor:
    """Locally aggregated, per-level L2-normalised patch embeddings [N, C, h, w].

    Each level is 3x3-average-pooled (a patch sees its neighbourhood, PatchCore),
    upsampled to the grid of the first (finest) level, normalised and scaled by
    1/sqrt(levels) so the concatenation is unit-norm and every depth weighs the same.
    """
    h, w = feats[0].shape[-2:]
    out = []
    for f in feats:
        if pool > 1:
            f = F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False)
        if f.shape[-2:] != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        out.append(F.normalize(f, dim=1))
    return torch.cat(out, dim=1) / math.sqrt(len(out))


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def axis_operator(grid: int, size: int, out: int, gauss: torch.Tensor) -> torch.Tensor:
    """[out, grid] matrix of one axis of the map chain: linear upsampling grid -> size
    (align_corners=False, as bilinear is along each axis), the 1-D Gaussian `gauss` with
    replicated borders, linear resize size -> out. Built by running those steps on the
    identity, so it is exactly what the steps compute."""
    # through numpy: under the ONNX tracer the matrix is then one constant of the graph,
    # not the ops that built it. Cached: the torch path (line context) asks for the same
    # few matrices every batch, and building one took longer than using it. A copy, so
    # a caller cannot change the cached one.
    kernel = gauss.detach().float().cpu().numpy().tobytes()
    return torch.from_numpy(_axis_matrix(grid, size, out, kernel).copy())


@functools.lru_cache(maxsize=64)
@torch.no_grad()
def _axis_matrix(grid: int, size: int, out: int, kernel: bytes) -> np.ndarray:
    gauss = torch.from_numpy(np.frombuffer(kernel, np.float32).copy())
    x = F.interpolate(torch.eye(grid).unsqueeze(1), size=size, mode="linear", align_corners=False)
    if gauss.numel() > 1:
        r = gauss.numel() // 2
        x = F.conv1d(F.pad(x, (r, r), mode="replicate"), gauss.view(1, 1, -1))
    if out != size:
        x = F.interpolate(x, size=out, mode="linear", align_corners=False)
    return x.squeeze(1).T.numpy()


def resize_map_stepwise(
    grid: torch.Tensor, size: int, gauss: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """The map chain as separate full-size steps (the runtime's form before issue 17):
    bilinear to the processing size, separable Gaussian with replicated borders, bilinear
    to the frame size. The reference `CladRuntime.resize_map` is pinned against, and
    bench.engine's "before" row."""
    x = F.interpolate(grid.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
    if gauss.numel() > 1:
        r = gauss.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), gauss.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), gauss.view(1, 1, -1, 1))
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False).squeeze(1)


class CladRuntime(nn.Module):
    """Visual memory-bank scoring (k-shot) fused with an optional text branch."""

    def __init__(
        self,
        encoder: VisualEncoder,
        bank: torch.Tensor,
        scale: float = 1.0,
        input_size: int = 320,
        pool: int = 3,
        metric: Metric = "cosine",
        topk_ratio: float = 0.01,
        sigma: float = 4.0,
        text_branch: nn.Module | None = None,
        w_visual: float = 1.0,
        w_text_pixel: float = 0.0,
        w_text_image: float = 0.0,
        chunk: int = 8192,
        pixel_pool: int | None = None,
        pixel_bank: torch.Tensor | None = None,
        pixel_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.text_branch = text_branch
        self.input_size, self.pool, self.metric, self.chunk = input_size, pool, metric, chunk
        # the pixel map may come from its own (finer, e.g. unpooled) embeddings and bank:
        # pooling steadies the image score, but blurs small defects out of the map
        self.pixel_pool = pool if pixel_pool is None else pixel_pool
        self.w_visual, self.w_text_pixel, self.w_text_image = w_visual, w_text_pixel, w_text_image
        # fixed top-k over the map at processing resolution: constant k keeps ONNX simple
        self.topk = max(1, int(round(topk_ratio * input_size * input_size)))
        self.register_buffer("bank", bank.float().contiguous())
        # distances are divided by the references' own leave-one-out statistic so a
        # normal frame scores ~1 whatever the product: one threshold scale per line
        self.register_buffer("scale", torch.tensor(float(scale)))
        # empty pixel bank = the pixel map is the image map (no second search)
        pb = torch.zeros(0, bank.shape[1]) if pixel_bank is None else pixel_bank
        self.register_buffer("pixel_bank", pb.float().contiguous())
        self.register_buffer("pixel_scale", torch.tensor(float(pixel_scale)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("gauss", gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1))
        self.eval()

    @property
    def split_maps(self) -> bool:
        """True when the pixel map has its own embeddings and bank."""
        return self.pixel_bank.shape[0] > 0 and self.bank.shape[0] > 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # banks are sized by the references: take the saved shapes; models saved before
        # the pixel bank existed load with an empty one (pixel map = image map)
        for name in ("bank", "pixel_bank"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
            elif name == "pixel_bank":
                state_dict[key] = torch.zeros(0, self.bank.shape[1])
        if prefix + "pixel_scale" not in state_dict:
            state_dict[prefix + "pixel_scale"] = torch.tensor(1.0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> CladRuntime:
        # never trained: BatchNorm must keep its running statistics even if a caller
        # (or torch.onnx.export restoring the "previous" mode) flips it to train
        return super().train(False)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC RGB -> normalised float NCHW at the processing size.

        Plain bilinear: the anti-aliased resize does not export to ONNX, so callers
        that downscale a lot (1024 px -> 320) should area-resize first
        (engine.training.datasets.load_rgb does) to keep fine textures from aliasing.
        """
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        s = self.input_size
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def visual_map(self, feats: list[torch.Tensor], pixel: bool = False) -> torch.Tensor:
        """Nearest-neighbour distance map [N, h, w] on the finest feature grid, / scale.

        pixel=True: the pixel map's embeddings (pixel_pool) against the pixel bank.
        """
        pool = self.pixel_pool if pixel else self.pool
        return self.bank_map(patch_embeddings(feats, pool), pixel)

    def bank_map(self, emb: torch.Tensor, pixel: bool = False) -> torch.Tensor:
        """Distance map [N, h, w] of embeddings [N, C, h, w] to the (pixel) bank, / scale."""
        bank, scale = (self.pixel_bank, self.pixel_scale) if pixel else (self.bank, self.scale)
        n, c, h, w = emb.shape
        q = emb.permute(0, 2, 3, 1).reshape(-1, c)
        d = nearest_distance(q, bank, self.metric, self.chunk)
        return d.reshape(n, h, w) / scale

    def resize_map(self, grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Feature-grid map [N, h, w] -> bilinear upsampling to the processing size, the
        Gaussian smoothing there, and a bilinear resize to (height, width), as two small
        matrix products.

        Each of the three steps is linear and acts on rows and columns separately, so the
        chain is A_h @ grid @ A_w.T with A [out, h] (`axis_operator`): the same numbers as
        running the steps on the full-size map, for ~1/4 of the engine's non-trunk CPU
        (the 33-tap convolutions over 320 x 320 maps were 13% of a batch on onnxruntime).
        """
        h, w = int(grid.shape[-2]), int(grid.shape[-1])
        s = int(self.input_size)
        rows = axis_operator(h, s, int(height), self.gauss).to(grid.dtype)
        cols = axis_operator(w, s, int(width), self.gauss).to(grid.dtype)
        return rows @ grid @ cols.T

    def forward(self, frames: torch.Tensor) -> AnomalyOutput:
        feats = self.encoder.forward_features(self.preprocess(frames))
        amap = self.w_visual * self.visual_map(feats) if self.bank.shape[0] > 0 else None
        pmap = self.w_visual * self.visual_map(feats, pixel=True) if self.split_maps else None
        return self.finish(feats, amap, pmap, frames.shape[1], frames.shape[2])

    def finish(
        self, feats: list[torch.Tensor], amap: torch.Tensor | None, pmap: torch.Tensor | None,
        height: int, width: int,
    ) -> AnomalyOutput:  # fmt: skip
        """Visual grid maps (image, pixel; weighted) -> text terms added, smoothed maps,
        top-k image score, pixel map at the frame size. Shared by `forward` and the
        line-context path (engine.scoring.line_context), which fuses the maps first."""
        n = feats[0].shape[0]
        img_text = None
        if self.text_branch is not None:
            img_text, patch_text = self.text_branch(feats)
            tmap = self.w_text_pixel * patch_text
            amap = tmap if amap is None else amap + tmap
            pmap = None if pmap is None else pmap + tmap
        if amap is None:
            raise RuntimeError("no memory bank and no text branch: nothing to score with")
        s = int(self.input_size)
        top = self.resize_map(amap, s, s).reshape(n, -1).topk(self.topk, dim=1).values
        scores = top.mean(dim=1)
        if img_text is not None:
            scores = scores + self.w_text_image * img_text
        maps = self.resize_map(amap if pmap is None else pmap, height, width)
        return AnomalyOutput(scores=scores, maps=maps)
