"""Nearest-neighbour search and greedy core-set."""

import pytest
import torch
import torch.nn.functional as F

from engine.scoring.memory_bank import greedy_coreset, nearest_distance

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_cosine_nearest_matches_brute_force(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    b = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    expected = 1 - (q @ b.T).max(dim=1).values
    torch.testing.assert_close(nearest_distance(q, b, "cosine", chunk), expected)


@pytest.mark.parametrize("chunk", [5, 1000])
def test_l2_nearest_matches_cdist(chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    q, b = torch.randn(40, 8, generator=g), torch.randn(123, 8, generator=g)
    expected = torch.cdist(q, b).min(dim=1).values
    torch.testing.assert_close(nearest_distance(q, b, "l2", chunk), expected, atol=1e-4, rtol=0)


def test_query_in_bank_has_zero_distance() -> None:
    b = F.normalize(torch.randn(20, 4), dim=1)
    assert nearest_distance(b[3:5], b).abs().max() < 1e-6


def test_coreset_picks_one_point_per_cluster() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    pts = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    idx = greedy_coreset(pts, 3, proj_dim=128)
    assert sorted((idx // 50).tolist()) == [0, 1, 2]


def test_coreset_unique_and_bounded() -> None:
    x = torch.randn(500, 300)
    idx = greedy_coreset(x, 100, proj_dim=32, seed=3)
    assert len(set(idx.tolist())) == 100 and idx.max() < 500
    # greedy k-centre: coverage radius shrinks as the core-set grows
    r50 = torch.cdist(x, x[greedy_coreset(x, 50, 32, 3)]).min(1).values.max()
    r100 = torch.cdist(x, x[idx]).min(1).values.max()
    assert r100 <= r50
    assert torch.equal(greedy_coreset(x, 600), torch.arange(500))


def test_coreset_from_candidates_indexes_the_full_set() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    pts = torch.cat([c + 0.1 * torch.randn(400, 2, generator=g) for c in centres])
    idx = greedy_coreset(pts, 3, proj_dim=128, max_candidates=60)
    # drawn from 60 of 1200 rows, still one point per cluster, as indices of all 1200
    assert sorted((idx // 400).tolist()) == [0, 1, 2]
    assert len(set(idx.tolist())) == 3 and idx.max() < 1200
    assert torch.equal(greedy_coreset(pts, 3, max_candidates=5000), greedy_coreset(pts, 3))
    # n_keep above the candidate count: every kept row is still distinct
    many = greedy_coreset(pts, 100, proj_dim=128, max_candidates=60)
    assert len(set(many.tolist())) == 100
