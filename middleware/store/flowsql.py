"""SQL the SQLite and PostgreSQL stores share for flow runs (see `FlowRunRecord` in base)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def save_flow_run_statement(run: Any, now: float, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The insert (a new run, revision 0) or compare-and-set update (over the revision read) that
    saves `run`; exactly one row changes when the save wins."""
    if run.revision == 0:
        marks = ", ".join([mark] * 7)
        sql = (
            "INSERT INTO flow_runs (flow, key, run_id, status, position, waiting_for, state, revision, "
            f"updated_at) VALUES ({marks}, 1, {mark}) ON CONFLICT (flow, key) DO NOTHING"
        )
        return sql, (run.flow, run.key, run.run_id, run.status, run.position, run.waiting_for, run.state, now)
    sql = (
        f"UPDATE flow_runs SET run_id = {mark}, status = {mark}, position = {mark}, waiting_for = {mark}, "
        f"state = {mark}, revision = revision + 1, updated_at = {mark} "
        f"WHERE flow = {mark} AND key = {mark} AND revision = {mark}"
    )
    params = (run.run_id, run.status, run.position, run.waiting_for, run.state, now, run.flow, run.key, run.revision)
    return sql, params
