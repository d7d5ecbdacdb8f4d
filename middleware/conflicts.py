"""Conflict policies of two-way routes, and `isthmus conflicts list | resolve`.

A **conflict** is a change of one synced field in one system that meets a different change of
the same field in the other system which Isthmus has not reconciled with it: the second change
was made before Isthmus's write of the first reached its system (so that write overwrote it),
or the field belongs to the other system. `middleware.twoway` finds them; a per-field policy
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

import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from middleware.errors import ConfigError, Problem
from middleware.store.base import ConflictRecord, Store

if TYPE_CHECKING:
    from middleware.broker.base import Broker
    from middleware.config import LoadedConfig, RouteConfig

PolicyName = Literal["owner", "last_writer_wins", "manual"]
POLICIES: tuple[str, ...] = ("owner", "last_writer_wins", "manual")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldPolicy(_Strict):
    """`{owner: crm}`, `last_writer_wins` or `manual` (also `{policy: manual}`)."""

    policy: PolicyName = Field(description="owner, last_writer_wins or manual.")
    owner: str | None = Field(default=None, description="owner only: the system of record for the field.")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value == "owner":
                raise ValueError("write owner as {owner: SYSTEM}, e.g. {owner: crm}")
            return {"policy": value}
        if isinstance(value, dict) and "owner" in value and "policy" not in value:
            return {"policy": "owner", **value}
        return value

    @model_validator(mode="after")
    def _owner_iff_policy(self) -> FieldPolicy:
        if self.policy == "owner" and not self.owner:
            raise ValueError("policy owner needs 'owner: SYSTEM'")
        if self.policy != "owner" and self.owner is not None:
            raise ValueError(f"'owner' goes with policy owner, not {self.policy}")
        return self

    def describe(self) -> str:
        return f"owner {self.owner}" if self.policy == "owner" else self.policy


class ConflictsConfig(_Strict):
    """Per-field conflict policy of a two-way pair; fields not listed take `default`."""

    default: FieldPolicy = Field(
        default_factory=lambda: FieldPolicy(policy="last_writer_wins"),
        description="Policy of every synced field not under `fields`.",
    )
    fields: dict[str, FieldPolicy] = Field(default_factory=dict, description="Field name → its policy.")

    def policy_for(self, name: str) -> FieldPolicy:
        return self.fields.get(name, self.default)


class TwoWayConfig(_Strict):
    """Makes a route one direction of a loop-free two-way pair (see middleware/twoway.py)."""

    peer: str = Field(description="Name of the route of the other direction (it names this one as its peer).")
    fields: list[str] = Field(
        min_length=1,
        description="Canonical fields compared and synced both ways (e.g. name, email); both routes list the same.",
    )
    conflicts: ConflictsConfig = Field(
        default_factory=ConflictsConfig, description="Per-field conflict policy; both routes of a pair agree."
    )
    write_always: list[str] = Field(
        default_factory=list,
        description="Target fields every write carries even when unchanged, e.g. the key a REST path needs.",
    )
    lock_ttl_s: float = Field(
        default=120.0, gt=0, description="How long a worker may hold a pair while it decides and writes."
    )


# ----- load-time checks ---------------------------------------------------------------------


def check_two_way_routes(
    routes: Sequence[RouteConfig], locate: Callable[[tuple[str | int, ...]], Any]
) -> list[Problem]:
    """Problems with the `two_way:` blocks of `routes`: a peer that does not answer back, a
    policy the peer does not share, an owner that is not one of the pair's systems."""
    from middleware.problems import did_you_mean

    problems: list[Problem] = []
    by_name = {route.name: (i, route) for i, route in enumerate(routes)}
    for i, route in enumerate(routes):
        cfg = route.two_way
        if cfg is None:
            continue
        where = ("routes", i, "two_way")

        def problem(message: str, path: tuple[str | int, ...], hint: str = "") -> None:
            problems.append(Problem(message, locate(path), ".".join(map(str, path)), hint))  # noqa: B023

        if not route.from_system:
            problem("a two-way route needs 'from_system'", ("routes", i), "add from_system: the system it reads")
        if route.to.flow is not None or not route.to.system:
            problem("a two-way route writes to a system, not a flow", ("routes", i, "to"), "to: {system: S, entity: E}")
        unknown_fields = sorted(set(cfg.conflicts.fields) - set(cfg.fields))
        for name in unknown_fields:
            problem(
                f"conflict policy for {name!r}, which is not a synced field",
                (*where, "conflicts", "fields", name),
                did_you_mean(name, cfg.fields) or f"add it to {'.'.join(map(str, where))}.fields",
            )
        found = by_name.get(cfg.peer)
        if found is None:
            problem(f"no route {cfg.peer!r} (the peer)", (*where, "peer"), did_you_mean(cfg.peer, list(by_name)))
            continue
        j, peer = found
        systems = {route.from_system, route.to.system}
        for name, policy in [("default", cfg.conflicts.default), *cfg.conflicts.fields.items()]:
            if policy.owner is not None and policy.owner not in systems:
                path = (*where, "conflicts", "default") if name == "default" else (*where, "conflicts", "fields", name)
                problem(
                    f"owner {policy.owner!r} is not a system of this pair",
                    path,
                    f"one of: {', '.join(sorted(s for s in systems if s))}",
                )
        if peer.two_way is None or peer.two_way.peer != route.name:
            problem(
                f"route {cfg.peer!r} must be two-way with peer: {route.name}",
                (*where, "peer"),
                f"add two_way: {{peer: {route.name}, ...}} to route {cfg.peer!r}",
            )
            continue
        if peer.from_system != route.to.system or peer.to.system != route.from_system:
            problem(
                f"route {cfg.peer!r} must read {route.to.system!r} and write {route.from_system!r}",
                (*where, "peer"),
                "the peer is the same pair in the other direction",
            )
        if i < j and (
            peer.two_way.fields != cfg.fields or peer.two_way.conflicts.model_dump() != cfg.conflicts.model_dump()
        ):
            problem(
                f"routes {route.name!r} and {cfg.peer!r} must sync the same fields with the same conflict policies",
                where,
                "share one block with a YAML anchor: two_way: &customers {...} and two_way: *customers",
            )
    return problems


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
    from middleware.twoway import resolution_message

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
