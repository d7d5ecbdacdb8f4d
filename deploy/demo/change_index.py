"""What a sample system's "changed since" listing rests on: keys in (moment, key) order.

The sample CRM lists customers, orders and products by `updated_at`, the sample ERP its
order statuses by `changed_at`; both answer `?…_since=T` with every key changed at or after
T, in a stable order (moment, then key) that paging can rely on.
"""

from __future__ import annotations

import bisect
from datetime import datetime


class ChangeIndex:
    """The moment each key last changed; sorted lazily, on the first listing after a change."""

    def __init__(self) -> None:
        self.moments: dict[str, datetime] = {}
        self._index: list[tuple[datetime, str]] | None = None

    def touch(self, key: str, moment: datetime) -> None:
        if self.moments.get(key) != moment:
            self.moments[key] = moment
            self._index = None

    def since(self, moment: datetime | None) -> list[tuple[datetime, str]]:
        """(moment, key) of every key changed at or after `moment` (all with None), oldest first."""
        if self._index is None:
            self._index = sorted((m, k) for k, m in self.moments.items())
        if moment is None:
            return self._index
        return self._index[bisect.bisect_left(self._index, (moment, "")) :]
