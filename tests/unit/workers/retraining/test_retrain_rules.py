import math
import uuid

import pytest

from workers.retraining.data import group_is_held_out, held_out_group, is_held_out
from workers.retraining.evaluation import decide

pytestmark = pytest.mark.unit

CHAMPION = {"image_auroc": 0.80, "pixel_auroc": 0.95, "f1_at_threshold": 0.70}


def test_better_on_main_metric_and_nothing_worse_is_promoted() -> None:
    decision = decide({**CHAMPION, "image_auroc": 0.85, "pixel_auroc": 0.94}, CHAMPION)
    assert decision.promote, decision.reason


@pytest.mark.parametrize(("challenger", "reason"), [
    ({**CHAMPION, "image_auroc": 0.80}, "not better"),
    ({**CHAMPION, "image_auroc": 0.79}, "not better"),
    ({**CHAMPION, "image_auroc": 0.90, "pixel_auroc": 0.92}, "pixel_auroc worse"),
    ({**CHAMPION, "image_auroc": 0.90, "f1_at_threshold": 0.60}, "f1_at_threshold worse"),
    ({**CHAMPION, "image_auroc": math.nan}, "undefined"),
])
def test_refusals_say_why(challenger: dict[str, float], reason: str) -> None:
    decision = decide(challenger, CHAMPION, tolerance=0.02)
    assert not decision.promote
    assert reason in decision.reason


def test_undefined_secondary_metric_does_not_block() -> None:
    champion = {**CHAMPION, "pixel_auroc": math.nan}
    assert decide({**CHAMPION, "image_auroc": 0.9, "pixel_auroc": math.nan}, champion).promote


def test_held_out_membership_is_stable_and_about_the_share() -> None:
    ids = [uuid.UUID(int=i * 7919 + 1) for i in range(4000)]
    first = [is_held_out(i, 0.3) for i in ids]
    assert first == [is_held_out(i, 0.3) for i in ids]  # frozen: same answer every run
    assert 0.27 < sum(first) / len(ids) < 0.33
    other_salt = [is_held_out(i, 0.3, salt=b"clad-calibration") for i in ids]
    assert other_salt != first  # an independent split


def test_frames_of_one_moment_share_a_side_of_the_held_out_split() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    # two cameras on one part, a burst of one camera: one group
    same = {held_out_group("tile", t0 + timedelta(seconds=s), 10) for s in (0.0, 0.4, 9.9)}
    assert len(same) == 1
    assert held_out_group("tile", t0 + timedelta(seconds=10), 10) not in same
    assert held_out_group("bottle", t0, 10) not in same
    groups = [held_out_group("tile", t0 + timedelta(seconds=10 * i), 10) for i in range(4000)]
    first = [group_is_held_out(g, 0.3) for g in groups]
    assert first == [group_is_held_out(g, 0.3) for g in groups]  # frozen across runs
    assert 0.27 < sum(first) / len(groups) < 0.33
