import math
import uuid

import pytest

from workers.retraining.data import is_held_out
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
