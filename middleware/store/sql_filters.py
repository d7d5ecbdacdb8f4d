"""The WHERE clause of a store listing, shared by the SQL both stores run.

Listings (flow runs, conflicts) filter on a few optional columns; a filter left out (None, or
no values) matches everything. Only the driver's placeholder (`?` or `%s`) differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def where_clause(
    mark: str, equal: Mapping[str, Any], any_of: Mapping[str, Sequence[Any]] | None = None
) -> tuple[str, tuple[Any, ...]]:
    """` WHERE col = mark AND … AND col IN (mark, …)` (or "") and its parameters, in order.

    A column of `equal` whose value is None, and a column of `any_of` with no values, is left out."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    for column, values in (any_of or {}).items():
        if values:
            clauses.append(f"{column} IN ({', '.join([mark] * len(values))})")
            params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
