"""A per-system request budget: a token bucket per second and a counter per UTC day.

One `RequestBudget` belongs to one REST adapter, i.e. to one system in one worker process
(the worker opens one adapter per system and hands its reader and writer to every source
and route of that system), so all of them draw on the same budget. Every HTTP call to the
system takes one unit first: reads, writes, token requests to the system itself and the
probes of `isthmus check`.

* `per_second`: a call waits (sleeps) until the bucket holds a token; bursts up to `burst`.
* `per_day`: once spent, `acquire` raises `BudgetExhausted` — a `TransientError` whose
  `retry_after` is the time left until 00:00 UTC, when the count starts again.

The remaining budget is exported as `isthmus_request_budget_remaining{system, window}`
(window `second` or `day`), computed when Prometheus scrapes, next to the configured
`isthmus_request_budget_limit`. Counts live in memory: a restarted process starts afresh.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from adapters.rest.config import RequestBudgetConfig
from middleware.errors import TransientError
from middleware.observability import REQUEST_BUDGET_LIMIT, REQUEST_BUDGET_REMAINING

DAY_S = 86_400


class BudgetExhausted(TransientError):
    """The day's request budget of a system is spent; retry after `retry_after` seconds (00:00 UTC)."""


class RequestBudget:
    """Thread-safe; `clock` (monotonic), `wall` (Unix time) and `sleep` are injectable for tests."""

    def __init__(
        self,
        system: str,
        config: RequestBudgetConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.per_second = config.per_second
        self.burst = float(config.burst or max(1, math.ceil(config.per_second or 1)))
        self.per_day = config.per_day
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._refilled_at = clock()
        self._day = int(wall() // DAY_S)
        self._used_today = 0
        if self.per_second is not None:
            REQUEST_BUDGET_LIMIT.labels(system, "second").set(self.burst)
            REQUEST_BUDGET_REMAINING.labels(system, "second").set_function(lambda: self.remaining("second"))
        if self.per_day is not None:
            REQUEST_BUDGET_LIMIT.labels(system, "day").set(self.per_day)
            REQUEST_BUDGET_REMAINING.labels(system, "day").set_function(lambda: self.remaining("day"))

    def acquire(self) -> None:
        """Take one call from the budget: wait for the per-second bucket, or raise BudgetExhausted."""
        with self._lock:
            self._roll_day()
            if self.per_day is not None and self._used_today >= self.per_day:
                left = (self._day + 1) * DAY_S - self._wall()
                raise BudgetExhausted(
                    f"request budget of system {self.system!r} is spent: {self.per_day} calls per day used; "
                    f"it renews at 00:00 UTC (in {left / 3600:.1f} h)",
                    system=self.system,
                    retry_after=max(1.0, left),
                )
            self._used_today += 1
            wait = 0.0
            if self.per_second is not None:
                self._refill()
                self._tokens -= 1.0  # may go below 0: a reservation, paid for by waiting
                if self._tokens < 0:
                    wait = -self._tokens / self.per_second
        if wait > 0:
            self._sleep(wait)

    def remaining(self, window: str) -> float:
        """Calls left now: `second` — tokens in the bucket (0 while callers wait); `day` — until 00:00 UTC."""
        with self._lock:
            if window == "second":
                if self.per_second is None:
                    return math.inf
                self._refill()
                return max(0.0, self._tokens)
            self._roll_day()
            if self.per_day is None:
                return math.inf
            return float(max(0, self.per_day - self._used_today))

    def _refill(self) -> None:
        assert self.per_second is not None
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.per_second)
        self._refilled_at = now

    def _roll_day(self) -> None:
        day = int(self._wall() // DAY_S)
        if day != self._day:
            self._day = day
            self._used_today = 0
