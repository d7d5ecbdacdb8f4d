"""The one rule for writing a cross-reference, shared by every store implementation.

A link is stored in both directions, and a record linked anew drops its old partner's
back-link, so a lookup from either side never answers with a stale partner. Only the SQL
placeholder differs between SQLite (`?`) and PostgreSQL (`%s`).
"""

from __future__ import annotations

from typing import Any, Protocol

from middleware.store.base import RecordRef

# Both directions of a link are rows; the key makes "the partner in system X" unique.
XREF_TABLE_DDL = """CREATE TABLE IF NOT EXISTS xref (
    src_system TEXT NOT NULL,
    src_entity TEXT NOT NULL,
    src_id     TEXT NOT NULL,
    dst_system TEXT NOT NULL,
    dst_entity TEXT NOT NULL,
    dst_id     TEXT NOT NULL,
    PRIMARY KEY (src_system, src_entity, src_id, dst_system)
)"""


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


def link_statements(placeholder: str) -> tuple[str, str]:
    """(unlink the old partner, upsert one direction) written with `placeholder`."""
    p = placeholder
    unlink = f"DELETE FROM xref WHERE src_system = {p} AND dst_system = {p} AND dst_entity = {p} AND dst_id = {p}"
    upsert = (
        "INSERT INTO xref (src_system, src_entity, src_id, dst_system, dst_entity, dst_id) "
        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
        "ON CONFLICT (src_system, src_entity, src_id, dst_system) "
        "DO UPDATE SET dst_entity = excluded.dst_entity, dst_id = excluded.dst_id"
    )
    return unlink, upsert


def write_link(conn: _Executes, statements: tuple[str, str], a: RecordRef, b: RecordRef) -> None:
    """Link `a` and `b` in both directions inside the caller's transaction."""
    unlink, upsert = statements
    conn.execute(unlink, (b.system, a.system, a.entity, a.id))
    conn.execute(unlink, (a.system, b.system, b.entity, b.id))
    conn.execute(upsert, (a.system, a.entity, a.id, b.system, b.entity, b.id))
    conn.execute(upsert, (b.system, b.entity, b.id, a.system, a.entity, a.id))
