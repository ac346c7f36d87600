"""Issue 30's decision rule for a pixel-map candidate (bench.map_rule) on made-up rows."""

import pytest

from bench.map_rule import decide

pytestmark = pytest.mark.unit


def _row(cat: str, method: str, pix: float, n: int = 15, ci: tuple | None = None) -> dict:
    lo, hi = ci or (pix - 5, pix + 5)
    return {"root": "r", "category": cat, "shots": 1, "method": method, "n_evaluated": n,
            "image_auroc": 90.0, "pixel_auroc": pix, "image_ci": [80.0, 95.0],
            "pixel_ci": [lo, hi]}  # fmt: skip


def _rows(cand: dict[str, float], n_big: int = 100) -> list[dict]:
    base = {"a": 90.0, "b": 95.0, "big": 80.0}
    rows = [_row(c, "engine", p, n_big if c == "big" else 15, (p - 2, p + 2) if c == "big"
                 else None) for c, p in base.items()]  # fmt: skip
    return rows + [_row(c, "engine~mix0.5", p, n_big if c == "big" else 15)
                   for c, p in cand.items()]  # fmt: skip


def test_a_candidate_up_everywhere_changes_the_default() -> None:
    out = "\n".join(decide(_rows({"a": 91.0, "b": 96.0, "big": 81.0}), "engine", 1))
    assert "verdict: CHANGE to engine~mix0.5" in out


def test_a_large_category_below_its_interval_keeps_the_default() -> None:
    # the mean rises by 2, but the 100-image category falls below its interval's lower end
    out = "\n".join(decide(_rows({"a": 99.0, "b": 99.0, "big": 77.5}), "engine", 1))
    assert "no candidate passes" in out and "verdict: keep the default" in out
    # a small category (< 30 images) may fall: only the large ones are bound by intervals
    out = "\n".join(decide(_rows({"a": 84.0, "b": 99.0, "big": 85.0}), "engine", 1))
    assert "(a)+(b) on all categories: engine~mix0.5" in out


def test_leave_one_category_out_must_agree() -> None:
    # chosen on b and big alone, the candidate does not hold on a (below a's interval)
    out = "\n".join(decide(_rows({"a": 84.0, "b": 99.0, "big": 83.0}), "engine", 1))
    assert "(a)+(b) on all categories: engine~mix0.5" in out
    assert "without a: mix0.5 (-6.0 there, does NOT hold)" in out
    assert "verdict: keep the default" in out
