"""`every:` intervals and the 5-field cron subset reconciliation schedules are written in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from middleware.schedule.cron import ScheduleError, parse_cron, parse_interval, parse_schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h30m", 5400), ("90s", 90), ("1d", 86400), ("2h", 7200), (" 1H ", 3600)],
)
def test_interval_counts_days_hours_minutes_seconds(text: str, seconds: float) -> None:
    interval = parse_interval(text)
    assert interval.seconds == seconds
    assert interval.next_after(at("2026-11-24T10:00:00")) == at("2026-11-24T10:00:00") + timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "m15", "1.5h", "0m", "15 minutes", "1m1h"])
def test_interval_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_interval(text)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2026-11-24T10:07:31", "2026-11-24T10:15:00"),
        ("*/15 * * * *", "2026-11-24T10:15:00", "2026-11-24T10:30:00"),  # strictly after
        ("0 2 * * *", "2026-11-24T02:00:00", "2026-11-25T02:00:00"),
        ("30 1-3/2 * * *", "2026-11-24T02:00:00", "2026-11-24T03:30:00"),
        ("0 0 1 jan,jul *", "2026-11-24T00:00:00", "2027-01-01T00:00:00"),
        ("0 9 * * mon-fri", "2026-11-28T12:00:00", "2026-11-30T09:00:00"),  # Saturday → Monday
        ("0 9 * * 7", "2026-11-24T00:00:00", "2026-11-29T09:00:00"),  # 7 is Sunday too
        ("0 0 13 * fri", "2026-11-24T00:00:00", "2026-11-27T00:00:00"),  # either day field matches
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("@hourly", "2026-11-24T10:59:59", "2026-11-24T11:00:00"),
        ("@daily", "2026-12-31T23:59:00", "2027-01-01T00:00:00"),
    ],
)
def test_cron_next_run(expression: str, after: str, expected: str) -> None:
    assert parse_cron(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("* * * *", "needs 5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step"),
        ("0 0 * foo *", "not a number or name"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 L * *", "not a number"),
    ],
)
def test_cron_mistakes_are_refused_with_the_reason(expression: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=complaint):
        parse_cron(expression)


def test_a_schedule_is_every_or_cron_not_both() -> None:
    with pytest.raises(ScheduleError, match="exactly one"):
        parse_schedule("15m", "* * * * *")
    with pytest.raises(ScheduleError, match="exactly one"):
        parse_schedule()
    assert str(parse_schedule(cron="0 * * * *")) == "cron '0 * * * *' (UTC)"
