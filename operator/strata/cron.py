"""Five-field cron schedules (minute hour day-of-month month day-of-week) and their macros.

Pure. The CRD's pattern checks the shape; parse() checks each field's values, so a schedule
the API server accepted but that can never fire ("99 * * * *") is reported, naming the field.
Times are UTC. Day-of-month and day-of-week follow cron: when both are restricted, a day
matching either fires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
          "@yearly": "0 0 1 1 *"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
# How far back a check looks at most: a schedule missed for longer fires once, not per miss.
MAX_LOOKBACK = dt.timedelta(days=2)


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, moment: dt.datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours or moment.month not in self.months:
            return False
        day = moment.day in self.days
        weekday = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day or weekday
        return day and weekday


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                start, end = (int(v) for v in base.split("-", 1))
            else:
                start = end = int(base)
        except ValueError:
            raise CronError(f"the {name} field {text!r} is not a number, range (a-b), list (a,b), step (*/n) or *") from None
        if step < 1 or start < low or end > high or start > end:
            raise CronError(f"the {name} field {text!r} is out of range: {name} takes {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expression: str) -> Schedule:
    text = MACROS.get(expression.strip(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"{expression!r} has {len(fields)} fields; a schedule has five "
                        "(minute hour day-of-month month day-of-week) or is a macro such as @daily")
    parsed = [_field(value, name, low, high) for value, (name, low, high) in zip(fields, _FIELDS)]
    weekdays = frozenset(day % 7 for day in parsed[4])  # 7 is Sunday too
    return Schedule(parsed[0], parsed[1], parsed[2], parsed[3], weekdays,
                    days_restricted=fields[2] != "*", weekdays_restricted=fields[4] != "*")


def fired(expression: str, after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
    """The latest time in (after, until] the schedule fires at, or None (minute resolution)."""
    schedule = parse(expression)
    after = max(after, until - MAX_LOOKBACK)
    moment = until.replace(second=0, microsecond=0)
    while moment > after:
        if schedule.matches(moment):
            return moment
        moment -= dt.timedelta(minutes=1)
    return None
