"""SQL the SQLite and PostgreSQL stores share for flow runs (see `FlowRunRecord` in base)."""

from __future__ import annotations

from collections.abc import Sequence

FLOW_RUN_SELECT = "SELECT flow, key, run_id, status, position, state, waiting_for, revision, updated_at FROM flow_runs"


def flow_run_filter(
    flow: str | None, key: str | None, statuses: Sequence[str], mark: str
) -> tuple[str, tuple[str, ...]]:
    """` WHERE ...` (or nothing) and its parameters for listing flow runs; `mark` is the driver's placeholder."""
    clauses: list[str] = []
    params: list[str] = []
    if flow is not None:
        clauses.append(f"flow = {mark}")
        params.append(flow)
    if key is not None:
        clauses.append(f"key = {mark}")
        params.append(key)
    if statuses:
        clauses.append(f"status IN ({', '.join([mark] * len(statuses))})")
        params.extend(statuses)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
