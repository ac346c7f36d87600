import numpy as np
import pytest
import torch

from engine.training.bank_refresh import (
    recency_weights,
    refreshed_bank,
    root_rows,
    select_references,
)

pytestmark = pytest.mark.unit


def test_references_cover_the_looks_newest_first_and_prefer_recent_among_alike() -> None:
    # two looks of the line: 6 old frames near 0, 3 recent ones near 10 (a lighting change)
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(6, 4, generator=gen) * 0.1
    new = torch.randn(3, 4, generator=gen) * 0.1 + 10
    x = torch.cat([old, new])
    ages = np.array([30, 29, 28, 27, 26, 25, 2, 1, 0], float) * 86_400
    picked = select_references(x, ages, 2, half_life_s=7 * 86_400)
    assert picked[0] == 8  # the newest frame first
    assert picked[1] < 6  # then the other look, however old
    # of frames that look alike, recency decides: among the old look the newest ones win
    picked = select_references(old, ages[:6], 2, half_life_s=86_400)
    assert picked[0] == 5 and picked[1] >= 3
    assert select_references(x, ages, 20, half_life_s=1.0) == list(range(9))


def test_bank_keeps_the_references_and_stays_bounded() -> None:
    root, line = torch.randn(50, 8), torch.randn(500, 8)
    bank = refreshed_bank(root, line, max_bank=200, seed=0)
    assert bank.shape == (200, 8) and torch.equal(bank[:50], root)
    # retrain after retrain: the line part is replaced, never appended
    again = refreshed_bank(bank[:50], torch.randn(500, 8), max_bank=200, seed=0)
    assert again.shape == (200, 8)
    assert refreshed_bank(root, line[:10], max_bank=200).shape == (60, 8)
    assert root_rows(60, 50) == 50 and root_rows(60, None) == 60 and root_rows(60, 99) == 60
    assert recency_weights(np.array([0.0, 86_400.0]), 86_400.0).tolist() == [1.0, 0.5]
