"""Eq. 3, 6 and 7 against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from engine.training.losses import (
    Decoders,
    class_balanced_weights,
    contrastive_loss,
    reconstruction_loss,
    sq_dist,
    total_loss,
)

pytestmark = pytest.mark.unit


def test_sq_dist_is_squared_l2() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert sq_dist(a, b).tolist() == [25.0, 0.0]


def test_contrastive_hand_computed() -> None:
    # sample 0: d_pos = 1, d_neg = 1 ; sample 1: d_pos = 0.25, d_neg = 4
    z_v = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    z_pos = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    z_neg = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    alpha, beta = 0.5, 2.0
    # pull: [1 - .5]+ = .5, [.25 - .5]+ = 0 ; push: [2 - 1]+ = 1, [2 - 4]+ = 0
    expected = ((0.5 + 1.0) + (0.0 + 0.0)) / 2
    assert contrastive_loss(z_v, z_pos, z_neg, alpha, beta).item() == pytest.approx(expected)


def test_contrastive_is_zero_inside_margins() -> None:
    z_v = torch.tensor([[1.0, 0.0]])
    assert (
        contrastive_loss(z_v, z_v.clone(), -z_v, alpha=0.1, beta=3.0).item() == 0.0
    )  # d_neg = 4 > 3


def test_weighted_contrastive_and_balanced_weights() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    w = class_balanced_weights(labels)
    assert w.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    z_v = torch.zeros(4, 1)
    z_pos = torch.tensor([[1.0], [1.0], [1.0], [2.0]])  # d_pos 1,1,1,4
    z_neg = torch.full((4, 1), 10.0)  # push term 0
    # pull with α=0: 1,1,1,4 -> 3*(1/6)*1 + (1/2)*4 = 2.5
    assert contrastive_loss(z_v, z_pos, z_neg, 0.0, 1.0, w).item() == pytest.approx(2.5)


def test_reconstruction_and_total() -> None:
    # modality 1: two vectors with ||.||² = 2 and 0 -> 1 ; modality 2 ([N,C,h,w]): 4 -> 4
    recon = [torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0]]).view(1, 2, 1, 1)]
    target = [torch.zeros(2, 2), torch.zeros(1, 2, 1, 1)]
    rec = reconstruction_loss(recon, target)
    assert rec.item() == pytest.approx(5.0)
    parts = total_loss(torch.tensor(0.5), rec, lam=0.1)
    assert parts.total.item() == pytest.approx(1.0)
    assert parts.contrastive.item() == 0.5 and parts.reconstruction.item() == pytest.approx(5.0)


def test_decoder_shapes() -> None:
    dec = Decoders(joint_dim=8, visual_dim=5, pooled_dim=10, text_dim=7, hidden=16)
    assert dec.patch(torch.zeros(2, 8, 3, 3)).shape == (2, 5, 3, 3)
    assert dec.image(torch.zeros(2, 8)).shape == (2, 10)
    assert dec.text(torch.zeros(4, 8)).shape == (4, 7)


def test_gradient_pulls_positive_closer() -> None:
    z_v = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = contrastive_loss(z_v, torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 5.0]]), 0.0, 1.0)
    loss.backward()
    assert z_v.grad is not None and z_v.grad[0, 0] < 0  # descent moves z_v toward +x
