"""When a scheduled job runs: `every: 15m` intervals and 5-field cron expressions, in UTC.

`parse_schedule(every=..., cron=...)` returns an object with `next_after(moment)`, the next
run strictly after `moment`. Times are UTC: a worker's schedule must not shift with the
host's time zone or its daylight-saving changes.

Cron is the classic 5-field subset, implemented here rather than taken from a library
(croniter, the usual one, was marked unmaintained by its author in 2024; the subset is a
page of code and is tested in tests/reconcile/test_schedule.py):

    minute hour day-of-month month day-of-week
    *   N   A-B   */S   A-B/S   N/S   and comma lists of those
    months jan..dec and weekdays sun..sat by name; weekday 0 and 7 are both Sunday
    @hourly @daily @midnight @weekly @monthly @yearly @annually

As in Vixie cron, when both day-of-month and day-of-week are restricted (neither is `*`),
a day matches if *either* does. Not supported: `L`, `W`, `#`, `?`, seconds, years.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_EVERY = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SEARCH_YEARS = 8  # long enough for Feb 29 whatever the start year


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, or that never fires; the message says which part."""


@dataclass(frozen=True)
class Interval:
    """Every `seconds` seconds, counted from the previous run."""

    seconds: float
    text: str

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"every {self.text}"


def parse_interval(text: str) -> Interval:
    """`15m`, `1h30m`, `90s`, `1d`: days, hours, minutes, seconds, in that order."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _EVERY.match(cleaned)
    if not cleaned or match is None:
        raise ScheduleError(f"interval {text!r} is not like 15m, 1h30m, 90s or 1d")
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise ScheduleError(f"interval {text!r} must be at least 1s")
    return Interval(float(total), cleaned)


@dataclass(frozen=True)
class CronSchedule:
    """The times a 5-field cron expression names (UTC), see the module docstring."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_restricted: bool
    weekday_restricted: bool
    text: str

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        by_day = moment.day in self.days
        by_weekday = weekday in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return by_day or by_weekday
        return by_day and by_weekday

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after `moment` (naive moments are taken as UTC)."""
        current = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
        current = current.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = current + timedelta(days=366 * _SEARCH_YEARS)
        while current < limit:
            if current.month not in self.months:
                year, month = (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
                current = current.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(current):
                current = current.replace(hour=0, minute=0) + timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0) + timedelta(hours=1)
            elif current.minute not in self.minutes:
                current += timedelta(minutes=1)
            else:
                return current
        raise ScheduleError(f"cron {self.text!r} never fires")

    def __str__(self) -> str:
        return f"cron {self.text!r} (UTC)"


def _field(text: str, low: int, high: int, names: list[str] | None, what: str) -> frozenset[int]:
    def number(part: str) -> int:
        lowered = part.lower()
        if names is not None and lowered in names:
            return names.index(lowered) + (low if what == "month" else 0)
        if not part.isdigit():
            raise ScheduleError(f"{what} {part!r} is not a number{' or name' if names else ''}")
        value = int(part)
        if not low <= value <= high:
            raise ScheduleError(f"{what} {value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{what} field {text!r} has an empty list item")
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(f"{what} step {step_text!r} must be a whole number >= 1")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise ScheduleError(f"{what} range {body!r} runs backwards")
        else:
            start = number(body)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> CronSchedule:
    expanded = MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron {text!r} needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    weekdays = _field(weekday, 0, 7, DAY_NAMES, "weekday")
    schedule = CronSchedule(
        minutes=_field(minute, 0, 59, None, "minute"),
        hours=_field(hour, 0, 23, None, "hour"),
        days=_field(day, 1, 31, None, "day"),
        months=_field(month, 1, 12, MONTH_NAMES, "month"),
        weekdays=frozenset(d % 7 for d in weekdays),
        day_restricted=day != "*",
        weekday_restricted=weekday != "*",
        text=text.strip(),
    )
    schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # raises for a date that never exists (Feb 30)
    return schedule


Schedule = Interval | CronSchedule


def parse_schedule(every: str | None = None, cron: str | None = None) -> Schedule:
    """Exactly one of `every` and `cron`."""
    if (every is None) == (cron is None):
        raise ScheduleError("set exactly one of 'every' (e.g. 15m) and 'cron' (e.g. '*/15 * * * *')")
    return parse_interval(every) if every is not None else parse_cron(cron or "")
