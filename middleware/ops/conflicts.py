"""`isthmus conflicts list | resolve`: the operator's side of two-way conflicts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from middleware.errors import ConfigError, Problem
from middleware.store.base import ConflictRecord, Store
from middleware.sync.conflicts import iso
from middleware.sync.twoway import resolution_message

if TYPE_CHECKING:
    from middleware.broker.base import Broker
    from middleware.config import LoadedConfig


def render(records: Sequence[ConflictRecord]) -> str:
    """The table `isthmus conflicts list` prints."""
    lines = []
    for record in records:
        sides = record.detail.get("sides", {})
        versions = "  ".join(
            f"{system}={json.dumps(side.get('value'), ensure_ascii=False)}@{(side.get('changed_at') or '')[:19]}"
            for system, side in sorted(sides.items())
        )
        lines.append(
            f"{record.id:<13} {record.status:<8} {record.route:<28} {record.field:<14} {record.policy:<16} {versions}"
        )
    lines.append(f"{len(records)} conflict{'s' if len(records) != 1 else ''}")
    return "\n".join(lines)


def parse_take(take: str, record: ConflictRecord) -> tuple[str, Any]:
    """(what was chosen, the value) for `--take SYSTEM` or `--take value=...` (JSON, else text)."""
    sides = record.detail.get("sides", {})
    if take.startswith("value="):
        text = take[len("value=") :]
        try:
            return "value", json.loads(text)
        except ValueError:
            return "value", text
    if take in sides:
        return take, sides[take].get("value")
    raise ConfigError(
        Problem(
            f"--take {take!r} names neither a side of conflict {record.id} nor a value",
            hint=f"use --take {' or --take '.join(sorted(sides))} or --take value=...",
        )
    )


def resolve(
    config: LoadedConfig,
    store: Store,
    broker: Broker,
    conflict_id: str,
    take: str,
    now: Callable[[], float] = time.time,
) -> ConflictRecord:
    """Resolve an open conflict: publish the chosen value to both routes of the pair, then mark it.

    The messages go first: a crash before the conflict is marked leaves it open, and resolving it
    again sends messages with the same idempotency keys, which the routes apply once."""
    found = store.conflicts(ids=[conflict_id], status=None)
    if not found:
        raise ConfigError(Problem(f"no conflict {conflict_id!r}", hint="run 'isthmus conflicts list'"))
    record = found[0]
    if record.status != "open":
        raise ConfigError(
            Problem(
                f"conflict {conflict_id} is already {record.status}", hint="'isthmus conflicts list --all' shows it"
            )
        )
    chosen, value = parse_take(take, record)
    routes = {route.name: route for route in config.model.routes}
    sides = record.detail.get("sides", {})
    for system, side in sorted(sides.items()):
        route_name = side.get("write_route")
        route = routes.get(route_name or "")
        if route is None or route.two_way is None:
            raise ConfigError(
                Problem(
                    f"conflict {conflict_id} is written to {system!r} by route {route_name!r}, which the config lacks",
                    hint="resolve it with the configuration the worker runs",
                )
            )
        other = next(s for name, s in sides.items() if name != system)
        message = resolution_message(route, other["ref"], record, chosen, value, now())
        broker.send(route.name, [message])
    record.status, record.resolved_at = "resolved", now()
    record.detail["resolution"] = {"by": "manual", "take": chosen, "value": value, "at": iso(record.resolved_at)}
    store.put_conflicts([record])
    return record
