"""Which describer serves a product: its own when its model has one, else the default one
of generic kinds (with its own encoder when the model's embeddings differ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import workers.streaming.scoring as scoring
from engine.defects.describer import RegionDescriber
from engine.defects.describer_artifacts import LoadedDescriber, save_describer
from engine.defects.vocabulary import Vocabulary
from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.calibration import Threshold
from engine.scoring.visual_encoder import VisualEncoder

pytestmark = pytest.mark.unit

VOCAB = Vocabulary("part", "part", {"chip": ["a chip"], "burr": ["a burr"]})


def _describer(channels: int) -> RegionDescriber:
    torch.manual_seed(0)
    return RegionDescriber(channels, 8, torch.randn(2, 8), [0, 1], joint_dim=8, hidden=16)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    cfg = ScoringConfig(input_size=64, aug_shifts=())
    encoder = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    ref = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    save_model(build_runtime([ref], cfg, encoder=encoder).eval(), tmp_path, ModelMetadata(
        category="part", scoring=cfg, threshold=Threshold(1.1, "false_alarm_rate", 2, 0),
        version="v1"))
    return tmp_path


@pytest.fixture
def default(monkeypatch: pytest.MonkeyPatch) -> LoadedDescriber:
    """A stand-in default describer reading 152-channel features of its own encoder."""
    loaded = LoadedDescriber(_describer(152), VOCAB, {"backbone": "efficientnet-lite0",
                             "stages": [2, 4], "input_size": 320, "pool": 3,
                             "encoder": "VisualEncoder:(2, 9):efficientnet-lite0"}, {},
                             identity="default-1", source="default", unclear_below=0.3)
    encoder = object()
    monkeypatch.setattr(scoring, "default_describer", lambda: (loaded, encoder))
    return loaded


def test_a_product_without_its_own_describer_gets_the_default(model_dir: Path,
                                                              default: LoadedDescriber) -> None:
    _, engine = scoring.load_trained(model_dir, "part")
    assert engine.describer is default
    # the k-shot model computes 112-channel stage-4 embeddings: the default brings its own
    assert engine.describer_encoder is not None


def test_the_products_own_describer_replaces_the_default(model_dir: Path,
                                                        default: LoadedDescriber) -> None:
    save_describer(model_dir / "part" / "v1", _describer(112), VOCAB,
                   {"input_size": 64, "pool": 3})
    _, engine = scoring.load_trained(model_dir, "part")
    assert engine.describer is not default and engine.describer.source == "product"
    assert engine.describer.vocabulary.keys == ["chip", "burr"]
    assert engine.describer_encoder is None  # it reads the model's own embeddings


def test_no_default_describer_leaves_regions_without_words(model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "default_describer", lambda: None)
    _, engine = scoring.load_trained(model_dir, "part")
    assert engine.describer is None and engine.describer_encoder is None


def test_the_shipped_default_reads_the_frames_pixels(model_dir: Path) -> None:
    """The shipped default describer needs no model's embeddings: its encoder hands it
    the frame itself, whatever the product model computes."""
    shipped = scoring.default_describer()
    assert shipped is not None
    loaded, encoder = shipped
    _, engine = scoring.load_trained(model_dir, "part")
    assert engine.describer is loaded and engine.describer_encoder is encoder
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    assert tuple(engine.patch_embeddings(frames).shape) == (2, 3, 64, 64)
