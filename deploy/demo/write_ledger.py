"""Which writes a sample system applied, by `Idempotency-Key`: what tests check exactly-once on.

A key already applied is answered with its first answer and not applied again (counted in
`duplicates`); every applied write is one entry in `effects`, and `applied_counts` says how
often each key was applied, so a test can assert that every message's effect landed once.
"""

from __future__ import annotations

from typing import Any

from deploy.demo.sample_server import Response


class WriteLedger:
    """The effect log and idempotency answers of one sample system (the caller holds its lock).

    `dedupe=False` stands for a target that ignores the key: every delivery is applied."""

    def __init__(self, dedupe: bool = True) -> None:
        self.dedupe = dedupe
        self.effects: list[dict[str, Any]] = []
        self.applied_counts: dict[str, int] = {}
        self.duplicates = 0
        self._answers: dict[str, Response] = {}

    def repeat(self, key: str | None) -> Response | None:
        """The first answer to `key` when it was applied before (a duplicate, counted); else None."""
        if not self.dedupe or key is None or key not in self._answers:
            return None
        self.duplicates += 1
        return self._answers[key]

    def applied(self, key: str | None, answer: Response, **effect: Any) -> None:
        """Record an applied write: its effect (after the key) and, with a key, the answer to repeat."""
        self.effects.append({"key": key, **effect})
        if key is not None:
            self.applied_counts[key] = self.applied_counts.get(key, 0) + 1
            self._answers[key] = answer
