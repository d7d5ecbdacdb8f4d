"""The state store's tables, written once for SQLite and PostgreSQL.

Both stores must create the same tables, or a deployment that moves from one to the other
finds a column missing. Only two things differ: the floating-point column type (`REAL`,
`DOUBLE PRECISION`) and SQLite's `WITHOUT ROWID`, which stores a table keyed by its primary
key alone (smaller and faster for these key-only lookups; PostgreSQL has no such clause).
The two-way sync tables are `middleware.store.syncsql.ddl`.
"""

from __future__ import annotations

from middleware.store.links import XREF_TABLE_DDL


def store_tables(real: str, without_rowid: bool) -> list[str]:
    """CREATE statements (each IF NOT EXISTS) for cross-references, watermarks, applied keys,
    record versions, flow runs and flow signals."""
    keyed = " WITHOUT ROWID" if without_rowid else ""
    return [
        XREF_TABLE_DDL,
        "CREATE INDEX IF NOT EXISTS xref_by_dst ON xref (dst_system, dst_entity, dst_id, src_system)",
        """CREATE TABLE IF NOT EXISTS watermarks (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
        f"""CREATE TABLE IF NOT EXISTS applied (
    route TEXT NOT NULL,
    key   TEXT NOT NULL,
    PRIMARY KEY (route, key)
){keyed}""",
        f"""CREATE TABLE IF NOT EXISTS record_versions (
    route      TEXT NOT NULL,
    record_key TEXT NOT NULL,
    changed_at {real} NOT NULL,
    PRIMARY KEY (route, record_key)
){keyed}""",
        f"""CREATE TABLE IF NOT EXISTS flow_runs (
    flow        TEXT NOT NULL,
    key         TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    position    INTEGER NOT NULL,
    waiting_for TEXT,
    state       TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    updated_at  {real} NOT NULL,
    PRIMARY KEY (flow, key)
)""",
        "CREATE INDEX IF NOT EXISTS flow_runs_by_update ON flow_runs (updated_at)",
        f"""CREATE TABLE IF NOT EXISTS flow_signals (
    flow        TEXT NOT NULL,
    key         TEXT NOT NULL,
    signal      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at {real} NOT NULL,
    PRIMARY KEY (flow, key, signal)
){keyed}""",
    ]
