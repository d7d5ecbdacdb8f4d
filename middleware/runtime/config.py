"""Config models the runtime owns: a route's retry policy.

Pure pydantic: `middleware.config` builds route models from it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(Strict):
    """Exponential backoff with jitter for transient failures, then the dead-letter queue."""

    max_attempts: int = Field(default=6, ge=1, description="Attempts before dead-lettering (1 = no retry).")
    initial_delay_s: float = Field(default=0.5, gt=0, description="Delay before the first retry.")
    multiplier: float = Field(default=2.0, ge=1, description="Each retry waits this much longer.")
    max_delay_s: float = Field(default=60.0, gt=0, description="Upper bound of one delay.")
    jitter: float = Field(default=0.2, ge=0, le=1, description="± fraction of randomness per delay.")
    delays_s: list[float] | None = Field(
        default=None,
        min_length=1,
        description="Explicit delays per retry, e.g. [1, 5, 30, 120, 600]; the last repeats. Replaces "
        "initial_delay_s/multiplier/max_delay_s. On RabbitMQ each delay is its own retry queue.",
    )

    @field_validator("delays_s")
    @classmethod
    def _positive_delays(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(delay <= 0 for delay in value):
            raise ValueError("every retry delay must be > 0 seconds")
        return value

    def nominal_delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1 = first), before jitter and Retry-After."""
        if self.delays_s:
            return self.delays_s[min(attempt, len(self.delays_s)) - 1]
        return min(self.max_delay_s, self.initial_delay_s * self.multiplier ** max(0, attempt - 1))

    def schedule(self) -> tuple[float, ...]:
        """Every distinct delay this policy can ask for: the retry steps a broker declares."""
        return tuple(sorted({self.nominal_delay(n) for n in range(1, max(2, self.max_attempts))}))
