"""Source schedules: `schedule: "0 2 * * *"` runs a source's batch at those wall-clock times.

The cron dialect is `middleware.schedule.cron`'s (one dialect for the whole product: reconciliation
schedules use it too): five fields, minute hour day-of-month month day-of-week, with `*`,
values, ranges, steps, lists, month and weekday names, the `@daily`-style macros, and cron's
rule that a day matches if *either* day field does when both are restricted. Refused at load:
anything else, backwards ranges, and schedules that never fire (`0 0 30 2 *`).

What this module adds is the time zone: a source's slots are wall-clock times in its
`timezone:` (an IANA name; UTC by default), because "master data at 02:00" means 02:00 where
the business is, all year. Across daylight-saving changes a slot runs once: one in the
repeated autumn hour runs at its first occurrence; one in the skipped spring hour runs
shifted forward by the gap (02:30 in Europe/Berlin runs at 03:30 that day). The search
walks whole months, days and hours, in both directions (`next_after` and
`latest_at_or_before`, which a poller uses to run missed slots once, not once each).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from middleware.schedule.cron import CronSchedule as _CronFields
from middleware.schedule.cron import parse_cron

_SEARCH_YEARS = 8  # as middleware.schedule.cron: long enough for 29 February whatever the start year


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_zone(name: str) -> tzinfo:
    """The time zone named `name` (IANA, or UTC); ValueError with a hint otherwise."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin, or UTC") from None


@dataclass(frozen=True)
class ZonedSchedule:
    """A cron expression in a time zone; `next_after` and `latest_at_or_before` give slots (UTC)."""

    expression: str
    zone: tzinfo
    fields: _CronFields

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> ZonedSchedule:
        """Parse `expression` (middleware.schedule.cron's dialect) for `timezone`; ValueError saying what is wrong."""
        return cls(expression=expression.strip(), zone=parse_zone(timezone), fields=parse_cron(expression))

    def __str__(self) -> str:
        name = getattr(self.zone, "key", None) or str(self.zone)
        return f"cron {self.expression!r} ({name})"

    # ----- slots ----------------------------------------------------------------------
    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment` (aware), as an aware UTC datetime."""
        moment = _aware(moment)
        wall = moment.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        while True:
            found = self._next_wall(wall)
            if found is None:  # unreachable for a parsed schedule (checked at parse time)
                raise ValueError(f"{self.expression!r} never fires")
            slot = self._to_utc(found)
            if slot > moment:
                return slot
            wall = found + timedelta(minutes=1)  # a repeated or skipped hour: that wall time was earlier

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last slot at or before `moment` (aware), as aware UTC; None if none in the search window."""
        moment = _aware(moment)
        wall = moment.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        while True:
            found = self._previous_wall(wall)
            if found is None:
                return None
            slot = self._to_utc(found)
            if slot <= moment:
                return slot
            wall = found - timedelta(minutes=1)

    # ----- wall-clock search ----------------------------------------------------------------
    def _day_matches(self, wall: datetime) -> bool:
        f = self.fields
        weekday = (wall.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        in_days, in_weekdays = wall.day in f.days, weekday in f.weekdays
        if f.day_restricted and f.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock minute at or after `wall` (naive)."""
        limit = wall.year + _SEARCH_YEARS
        while wall.year <= limit:
            if wall.month not in self.fields.months:
                wall = (wall.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(wall):
                wall = wall.replace(hour=0, minute=0) + timedelta(days=1)
            elif wall.hour not in self.fields.hours:
                wall = wall.replace(minute=0) + timedelta(hours=1)
            elif wall.minute not in self.fields.minutes:
                wall += timedelta(minutes=1)
            else:
                return wall
        return None

    def _previous_wall(self, wall: datetime) -> datetime | None:
        """The last matching wall-clock minute at or before `wall` (naive)."""
        limit = wall.year - _SEARCH_YEARS
        while wall.year >= limit:
            if wall.month not in self.fields.months:
                wall = wall.replace(day=1, hour=0, minute=0) - timedelta(minutes=1)
            elif not self._day_matches(wall):
                wall = wall.replace(hour=0, minute=0) - timedelta(minutes=1)
            elif wall.hour not in self.fields.hours:
                wall = wall.replace(minute=0) - timedelta(minutes=1)
            elif wall.minute not in self.fields.minutes:
                wall -= timedelta(minutes=1)
            else:
                return wall
        return None

    def _to_utc(self, wall: datetime) -> datetime:
        # fold=0: a repeated wall time is its first occurrence; a skipped one is shifted by the gap
        return wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedule times must carry a time zone")
    return moment
