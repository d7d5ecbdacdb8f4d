"""The `isthmus.yaml` files the bench runs on, built in one place.

Every end-to-end figure runs one route of bench customers (`middleware.bench.workload`)
through the demo's customer chain into one target system, with the repo's mappings and
quiet JSON logs; only the broker, the store and the target differ between figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from middleware.bench.harness import REPO
from middleware.bench.workload import CUSTOMER_TYPE

# The sample ERP's (and the loopback target's) account, as the REST adapter writes it:
# create, then update by the id the create answered.
ACCOUNT_WRITES: dict[str, Any] = {
    "write": {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": "/api/accounts"},
        "update": {"method": "PUT", "path": "/api/accounts/{target_id}"},
        "id_path": "id",
    }
}


def customer_route(name: str, system: str, entity: str, to_target: str, batch_size: int) -> dict[str, Any]:
    """A route of CRM customers mapped through `crm_customer_to_canonical` and `to_target`."""
    return {
        "name": name,
        "on": [CUSTOMER_TYPE],
        "mappings": ["crm_customer_to_canonical", to_target],
        "to": {"system": system, "entity": entity},
        "batch_size": batch_size,
    }


def bench_config(broker: str, store: str, systems: dict[str, Any], routes: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole config: `broker`, `store`, the repo's mappings, `systems` and `routes`."""
    return {
        "broker": broker,
        "store": store,
        "mappings": [str(REPO / "mappings")],
        "observability": {"port": 0, "log_format": "json", "log_level": "warning"},
        "systems": systems,
        "routes": routes,
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
