from datetime import datetime

import pytest

from workers.retraining.cron import CronError, CronSchedule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 3 * * *", datetime(2026, 11, 23, 10, 0), datetime(2026, 11, 24, 3, 0)),
    ("0 3 * * *", datetime(2026, 11, 23, 2, 59, 30), datetime(2026, 11, 23, 3, 0)),
    ("*/15 * * * *", datetime(2026, 11, 23, 10, 7), datetime(2026, 11, 23, 10, 15)),
    ("30 6 * * 1-5", datetime(2026, 11, 28, 12, 0), datetime(2026, 11, 30, 6, 30)),  # Sat -> Mon
    ("0 0 1 * *", datetime(2026, 12, 15, 0, 0), datetime(2027, 1, 1, 0, 0)),
    ("0 12 * * 0", datetime(2026, 11, 23, 0, 0), datetime(2026, 11, 29, 12, 0)),  # Sunday
    ("0 12 * * 7", datetime(2026, 11, 23, 0, 0), datetime(2026, 11, 29, 12, 0)),  # Sunday too
    # Both day fields restricted: either matches (cron's rule). 1st of Dec is a Tuesday.
    ("0 0 1 * 5", datetime(2026, 11, 27, 1, 0), datetime(2026, 12, 1, 0, 0)),
    ("5,35 8-9 * * *", datetime(2026, 11, 23, 8, 40), datetime(2026, 11, 23, 9, 5)),
])
def test_next_after(expression: str, after: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(after) == expected


@pytest.mark.parametrize("expression", ["0 3 * *", "61 * * * *", "* 24 * * *", "*/0 * * * *",
                                        "a * * * *", "5-2 * * * *"])
def test_bad_expressions_are_refused(expression: str) -> None:
    with pytest.raises(CronError):
        CronSchedule.parse(expression)


def test_impossible_date_is_reported() -> None:
    with pytest.raises(CronError, match="never fires"):
        CronSchedule.parse("0 0 31 2 *").next_after(datetime(2026, 1, 1))
