"""Load-time checks of how routes share target records: what no single route can see.

Each route is safe on its own; several routes writing one target entity are not, unless they
agree on how they write it:

* A two-way pair **owns** the entities its routes write (e.g. Tryton parties for a CRM ↔ Tryton
  customer pair): it keeps per field what each side holds, so it can tell a user's change
  from its own write. Another route writing that entity bypasses that bookkeeping; what it
  writes (say a webhook's party without an address) is then read back as a user's change and
  synced over the other side. An error: feed the pair's own route instead.
* Two routes that write the same target entity may both create the same record. Without a
  shared business key (`to: {key: FIELD}`) neither can find what the other created: a
  warning, since some topologies (an import and a correction route) never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from middleware.errors import Problem

Locate = Callable[[tuple[str | int, ...]], Any]


def check_route_topology(
    routes: Sequence[Any], locate: Locate, upsert_key: Callable[[str, str], str | None] = lambda s, e: None
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about routes that write the same target entity.

    `upsert_key(system, entity)` names the key a target writes by in one request (a REST upsert
    to /things/{key}): the target itself then keeps one record per key, whoever writes it."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    owners: dict[tuple[str, str], str] = {}
    for route in routes:
        if route.two_way is not None and route.to.flow is None:
            owners.setdefault((route.to.system, route.to.entity), route.name)
    writers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for i, route in enumerate(routes):
        if route.to.flow is not None:
            continue
        target = (route.to.system, route.to.entity)
        writers.setdefault(target, []).append((i, route))
        owner = owners.get(target)
        if owner is not None and route.two_way is None:
            errors.append(
                Problem(
                    f"route {route.name!r} writes {route.to.system}.{route.to.entity}, which the two-way route "
                    f"{owner!r} owns: its writes would be read back as user changes and synced over the other "
                    "system (a partial record blanks fields there)",
                    locate(("routes", i, "to")),
                    f"routes[{i}].to",
                    f"let {owner!r} take these messages (add {', '.join(route.on)} to its on:, with its from_system) "
                    "and remove this route, or write another entity",
                )
            )
    for (system, entity), found in writers.items():
        if len(found) < 2 or upsert_key(system, entity):
            continue
        keys = {_key(route.to.key_fields or None) for _, route in found}
        if len(keys) == 1 and () not in keys:
            continue
        names = ", ".join(repr(route.name) for _, route in found)
        for i, _route in found[1:]:
            warnings.append(
                Problem(
                    f"routes {names} all write {system}.{entity} without a shared business key: each may create "
                    "the same record, and neither finds what the other created",
                    locate(("routes", i, "to")),
                    f"routes[{i}].to",
                    "give each of them the same to.key (the target field(s) that identify the record), "
                    f"e.g. to: {{system: {system}, entity: {entity}, key: reference}}",
                    severity="warning",
                )
            )
    return errors, warnings


def _key(key: str | list[str] | None) -> tuple[str, ...]:
    if key is None:
        return ()
    return (key,) if isinstance(key, str) else tuple(sorted(key))
