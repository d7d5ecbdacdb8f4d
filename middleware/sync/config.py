"""Config models of two-way pairs (`two_way:` on a route) and the checks that pair routes.

Pure pydantic on purpose: `middleware.config` builds route models from these, so this module
imports nothing of Isthmus beyond the contracts (errors, problems)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from middleware.errors import Problem
from middleware.problems import did_you_mean

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
    """Makes a route one direction of a loop-free two-way pair (see middleware/sync/twoway.py)."""

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
    routes: Sequence[Any], locate: Callable[[tuple[str | int, ...]], Any]
) -> list[Problem]:
    """Problems with the `two_way:` blocks of `routes`: a peer that does not answer back, a
    policy the peer does not share, an owner that is not one of the pair's systems."""
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
