"""SQL the SQLite and PostgreSQL stores share for flow runs (see `FlowRunRecord` in base)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from middleware.store.sql_filters import where_clause

FLOW_RUN_SELECT = "SELECT flow, key, run_id, status, position, state, waiting_for, revision, updated_at FROM flow_runs"


def flow_run_filter(
    flow: str | None, key: str | None, statuses: Sequence[str], mark: str
) -> tuple[str, tuple[str, ...]]:
    """` WHERE ...` (or nothing) and its parameters for listing flow runs; `mark` is the driver's placeholder."""
    return where_clause(mark, {"flow": flow, "key": key}, {"status": statuses})


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
