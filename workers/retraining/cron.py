"""Five-field cron expressions ("0 3 * * *") for `clad retrain --schedule`, via croniter.

minute hour day-of-month month day-of-week, with croniter's syntax (`*`, numbers, ranges,
lists, steps, names); day-of-week 0-6 with 0 = Sunday (7 too). As in cron, when both day
fields are restricted a day matching either one runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

# croniter reads "5-2" as a wrap-around range (5..59, 0..2); cron(8) refuses it, and so do we,
# since a reversed range in a schedule is far more often a typo than an intent.
_RANGE = re.compile(r"(\d+)-(\d+)")


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronSchedule:
    expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != 5:  # croniter also takes seconds/years columns; the CLI says five
            raise CronError(f"{expression!r}: a cron expression has 5 fields, got {len(parts)}")
        for a, b in _RANGE.findall(expression):
            if int(a) > int(b):
                raise CronError(f"{expression!r}: range {a}-{b} runs backwards")
        try:
            croniter(expression)
        except CroniterError as exc:
            raise CronError(f"{expression!r}: {exc}") from None
        return cls(" ".join(parts))

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after `moment` (same tzinfo)."""
        try:
            return croniter(self.expression, moment, day_or=True).get_next(datetime)
        except CroniterBadDateError:
            raise CronError("the schedule never fires (e.g. 31 February)") from None
