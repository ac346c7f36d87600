"""bench.accuracy's rows for the pixel map chosen from labelled defects."""

from __future__ import annotations

import pytest

from bench.accuracy import label_choice_rows, label_choice_table
from engine.evaluation.map_choice import decide

pytestmark = pytest.mark.unit


def _row(method: str, pixel: float) -> dict:
    return {"root": "r", "category": "c", "shots": 1, "method": f"{method}@rest",
            "n_evaluated": 10, "n_anomalous": 5, "image_auroc": 90.0, "pixel_auroc": pixel}


def _rest() -> dict:
    return {(1, "engine"): _row("engine", 80.0), (1, "s4-pix3"): _row("s4-pix3", 85.0),
            (1, "plain"): _row("plain", 82.0), (1, "engine+line"): _row("engine+line", 81.0),
            (1, "s4-pix3+line"): _row("s4-pix3+line", 88.0), (4, "engine"): _row("engine", 1.0)}


@pytest.mark.parametrize(("fine", "pooled", "pure", "line"),
                         [(80.0, 90.0, 85.0, 88.0), (90.0, 80.0, 80.0, 81.0)])
def test_the_chosen_map_row_takes_the_chosen_source(fine: float, pooled: float, pure: float,
                                                    line: float) -> None:
    rows = label_choice_rows(1, decide(fine, pooled, 4), _rest())
    by = {r["method"]: r for r in rows}
    assert by["engine@rest~labels"]["pixel_auroc"] == pure
    assert by["engine+line@rest~labels"]["pixel_auroc"] == line
    assert by["engine@rest~labels"]["image_auroc"] == 90.0
    assert "plain@rest" in by and all(r["shots"] == 1 for r in rows)  # K=4 left out
    table = "\n".join(label_choice_table(rows, []))
    assert f"| r/c | {by['engine@rest~labels']['pixel_map']} (" in table
