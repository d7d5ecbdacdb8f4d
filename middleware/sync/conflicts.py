"""Conflict policies of two-way routes, as records in the store.

A **conflict** is a change of one synced field in one system that meets a different change of
the same field in the other system which Isthmus has not reconciled with it: the second change
was made before Isthmus's write of the first reached its system (so that write overwrote it),
or the field belongs to the other system. `middleware.sync.twoway` finds them; a per-field policy
from the route's `two_way.conflicts` decides:

* `{owner: SYSTEM}` — system of record: the owner's value stands. A change of the field in the
  other system is not sent on; Isthmus writes the owner's value back over it right away (a
  correction message on the other route — "corrected back on the next sync" of that record).
* `last_writer_wins` — the change with the later source change time wins (ties keep the value
  already agreed); the loser's system is corrected to the winner's value.
* `manual` — nothing is written for the field in either direction: both versions are parked
  in the store until `isthmus conflicts resolve ID --take SYSTEM|value=...`, which publishes
  one resolution message per route of the pair; each route applies it like any message
  (idempotency key `…@resolution:ID`).

Every conflict is recorded (`isthmus conflicts list --all` shows the decided ones too) and
counted in `isthmus_conflicts_total{route,policy}`; open ones in `isthmus_conflicts_open{route}`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from middleware.store.base import ConflictRecord

# ----- conflict records ---------------------------------------------------------------------


def new_conflict_id() -> str:
    return "c-" + uuid.uuid4().hex[:10]


def iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def summary(record: ConflictRecord) -> dict[str, Any]:
    """One conflict as `isthmus conflicts list --json` prints it."""
    detail = record.detail
    return {
        "id": record.id,
        "route": record.route,
        "pair": record.pair,
        "field": record.field,
        "policy": record.policy,
        "status": record.status,
        "detected_at": iso(record.detected_at),
        "resolved_at": iso(record.resolved_at),
        "sides": detail.get("sides", {}),
        "resolution": detail.get("resolution"),
    }
