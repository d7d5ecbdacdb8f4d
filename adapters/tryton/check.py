"""`check` of a Tryton system: the server's version and the access rights the entities need.

Nothing here writes. After logging in (which proves reachability and credentials), it asks

1. `common.server.version` (at the root endpoint, `<url>/rpc/`): the Tryton series (e.g.
   7.0), reported as the API version;
2. `model.ir.model.access.get_access` for every model the configured entities touch: what
   the logged-in user may do per model, as Tryton's `ir.model.access` rules (and the user's
   groups) say. An entity with `read:` needs `read` on its model; one with `write:` needs
   `create` and `write` on its model and on the child models a write creates (a party's
   addresses and contact mechanisms, a sale's lines).

The result lands in `CheckResult.extra`: `version`, `permissions` (one per entity and
access, as `isthmus check` matches them to the sources and routes) and `access` (model →
{read, create, write, delete}).
"""

from __future__ import annotations

from typing import Any

import requests

from adapters.tryton.config import TrytonSystemConfig
from adapters.tryton.rpc import TrytonRpc, decode, encode
from middleware.errors import TransientError

# Child records a write of this kind creates, so their models need create and write too.
CHILD_MODELS: dict[str, tuple[str, ...]] = {
    "party": ("party.address", "party.contact_mechanism"),
    "sale": ("sale.line",),
}
WRITE_MODES = ("create", "write")


def server_version(rpc: TrytonRpc, url: str, timeout_s: float) -> str | None:
    """The server's series (`7.0`), or None when it does not say.

    `common.server.version` is served at the root endpoint (`<url>/rpc/`), not below the
    database, and needs no session: it is asked with the RPC's HTTP session but no credentials.
    """
    try:
        response = rpc.http.post(
            f"{url}/rpc/", data=encode({"id": 0, "method": "common.server.version", "params": []}), timeout=timeout_s
        )
    except requests.RequestException as exc:
        raise TransientError(f"Tryton common.server.version failed: {type(exc).__name__}", system=rpc.system) from None
    if response.status_code != 200:
        return None
    try:
        found = decode(response.content).get("result")
    except (ValueError, AttributeError):
        return None
    return str(found) if found else None


def entity_permissions(config: TrytonSystemConfig, rpc: TrytonRpc) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one permission per entity and access, the user's access per model) from `ir.model.access`."""
    wanted: dict[str, list[tuple[str, tuple[str, ...]]]] = {}  # entity → [(access, models)]
    models: set[str] = set()
    for entity, spec in config.entities.items():
        model = config.model_of(entity)
        if spec.read is not None:
            wanted.setdefault(entity, []).append(("read", (model,)))
            models.add(model)
        if spec.write is not None:
            touched = (model, *CHILD_MODELS.get(config.kind_of(entity), ()))
            wanted.setdefault(entity, []).append(("write", touched))
            models.update(touched)
    if not models:
        return [], {}
    access: dict[str, Any] = rpc.model("ir.model.access", "get_access", sorted(models))
    permissions: list[dict[str, Any]] = []
    for entity, needs in wanted.items():
        for kind, touched in needs:
            modes = ("read",) if kind == "read" else WRITE_MODES
            refused = [f"{mode} {m}" for m in touched for mode in modes if not (access.get(m) or {}).get(mode)]
            granted = ", ".join(f"{m}: {'/'.join(mode for mode in modes)}" for m in touched)
            permissions.append(
                {
                    "entity": entity,
                    "access": kind,
                    "model": touched[0],
                    "ok": not refused,
                    "detail": (
                        f"ir.model.access refuses {', '.join(refused)} to user {config.username!r}"
                        if refused
                        else f"ir.model.access allows {granted}"
                    ),
                }
            )
    return permissions, access
