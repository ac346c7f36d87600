"""Head training: loss goes down, seeded, resume equals an uninterrupted run, patch labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from engine.scoring.visual_encoder import VisualEncoder
from engine.training.train import TrainConfig, extract_features, train_heads

pytestmark = pytest.mark.unit

CFG = TrainConfig(epochs=4, batch_size=8, joint_dim=16, hidden=32, normal_views=2, anomaly_views=2)


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.tile(np.linspace(60, 200, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    return [
        np.clip(base + rng.integers(-10, 10, base.shape), 0, 255).astype(np.uint8) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    enc = VisualEncoder("efficientnet-lite0", (2, 4), pretrained=False)
    return extract_features(enc, [_images(3, 0), _images(3, 1)], CFG, progress=False)


def _texts() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(3, 12, generator=g), torch.randn(4, 12, generator=g)) for _ in range(2)]


def test_views_and_patch_labels(data) -> None:  # type: ignore[no-untyped-def]
    assert len(data.labels) == 2 * 3 * (CFG.normal_views + CFG.anomaly_views)
    assert data.feats[0].shape[-2:] == data.patch_labels.shape[-2:] == (8, 8)  # stride 8 at 64 px
    normal = data.labels == 0
    assert (data.patch_labels[normal] == 0).all()
    assert (data.patch_labels[~normal] == 1).any()
    assert set(data.groups.tolist()) == {0, 1}


def test_training_lowers_the_loss_and_is_seeded(data) -> None:  # type: ignore[no-untyped-def]
    branch, hist = train_heads(data, _texts(), CFG, progress=False)
    assert hist.epochs[0]["epoch"] == -1  # the untrained reference
    assert hist.epochs[-1]["total"] < hist.epochs[0]["total"]
    again, _ = train_heads(data, _texts(), CFG, progress=False)
    for a, b in zip(branch.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_matches_an_uninterrupted_run(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    full, hist_full = train_heads(data, _texts(), CFG, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    train_heads(data, _texts(), replace(CFG, epochs=2), ckpt, progress=False)
    with pytest.raises(ValueError, match="another training config"):
        train_heads(data, _texts(), replace(CFG, lr=0.5), ckpt, resume=True, progress=False)
    resumed, hist = train_heads(data, _texts(), CFG, ckpt, resume=True, progress=False)
    assert [e["epoch"] for e in hist.epochs] == [-1, 0, 1, 2, 3]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert hist.epochs[-1]["total"] == pytest.approx(hist_full.epochs[-1]["total"], rel=1e-5)


def test_cli_registers_train() -> None:
    from workers.cli.train import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer in sub-command mode
        pass

    res = CliRunner().invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "--category" in res.output and "--resume" in res.output
