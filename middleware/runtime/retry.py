"""Backoff delays for transient failures: exponential, capped, jittered, Retry-After aware."""

from __future__ import annotations

import random

from middleware.runtime.config import RetryPolicy


def backoff_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1 = first retry).

    Jitter spreads retries of a burst so they do not hit a recovering system at once. A
    server's Retry-After is a floor: we never come back sooner than it asked.
    """
    base = policy.nominal_delay(attempt)
    spread = base * policy.jitter
    delay = base + (rng or random).uniform(-spread, spread)
    if retry_after is not None:
        delay = max(delay, retry_after)
    ceiling = max(policy.delays_s) if policy.delays_s else policy.max_delay_s
    return max(0.0, min(delay, max(ceiling, retry_after or 0.0)))
