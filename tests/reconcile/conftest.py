"""A synced CRM ↔ Tryton world for the reconciliation and replay tests.

The real Tryton comes from tests/adapters/tryton/conftest.py (imported, so this folder gets
its own session server: drift counts must not see the parties other test folders make).
`synced` starts the sample CRM on loopback, writes an isthmus.yaml for the customers route
only, runs a worker until every valid customer is a party, and keeps the worker running so
that heals and replays are applied as they would be in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.reconcile.engine import read_all
from middleware.runtime.worker import Worker
from tests.adapters.tryton.conftest import tryton  # noqa: F401 - the session's real Tryton, for this folder

REPO = Path(__file__).resolve().parents[2]
ROUTE = "customers_crm_to_tryton"
CRM_TOKEN = "reconcile-crm-token"
CUSTOMERS = [f"C-{1001 + i}" for i in range(11)]  # C-1010 is archived: an inactive party
NAMELESS = "C-1099"  # its mapping fails: unmappable, and dead-lettered by the route
NO_EMAIL = "C-1098"  # its e-mail contact mechanism is not created by Tryton: still in sync (stored_form)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def write_config(path: Path, crm_url: str, server: LocalTryton, state: Path) -> Path:
    config = {
        "broker": f"embedded:///{state}/broker.db",
        "store": f"sqlite:///{state}/state.db",
        "mappings": [str(REPO / "mappings")],
        "observability": {"port": 0, "log_format": "json", "log_level": "error"},
        "systems": {
            "crm": {
                "type": "rest",
                "base_url": crm_url,
                "auth": {"type": "bearer", "token": "${RECONCILE_CRM_TOKEN}"},
                "entities": {
                    "customer": {
                        "read": {
                            "path": "/api/customers",
                            "item_path": "/api/customers/{id}",
                            "records_path": "data",
                            "id_field": "customer_no",
                            "version_field": "version",
                            "updated_field": "updated_at",
                            "since_param": "updated_since",
                            "pagination": {"type": "page", "page_size": 5, "start": 1},
                        }
                    }
                },
            },
            "tryton": {
                "type": "tryton",
                "url": server.url,
                "database": server.database,
                "username": server.username,
                "password": "${RECONCILE_TRYTON_PASSWORD}",
                "settle_s": 0,
                "entities": {"party": {"read": {}, "write": {"key_field": "code"}}},
            },
        },
        "sources": [
            {
                "name": "crm_customers",
                "system": "crm",
                "entity": "customer",
                "emits": "customer.upserted",
                "poll_interval_s": 0.3,
            }
        ],
        "routes": [
            {
                "name": ROUTE,
                "on": ["customer.upserted"],
                "from_system": "crm",
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_tryton_party"],
                "to": {"system": "tryton", "entity": "party"},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.2, "max_delay_s": 0.5},
            }
        ],
        "reconcile": {ROUTE: {"every": "1h", "unlinked_match": {"code": "C-*"}}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class World:
    crm: SampleCrm
    tryton: LocalTryton
    config_path: Path
    worker: Worker
    erp: TrytonAdapter  # a separate session, as a person working in Tryton would have

    def party(self, code: str) -> dict[str, Any] | None:
        rows = self.erp.rpc.model(
            "party.party",
            "search_read",
            [("code", "=", code)],
            0,
            None,
            None,
            ["name", "code", "active"],
            context={"active_test": False},
        )
        return rows[0] if rows else None

    def party_id(self, code: str) -> int:
        found = self.party(code)
        assert found is not None, f"no party {code}"
        return int(found["id"])

    def rename_party(self, code: str, name: str) -> None:
        self.erp.rpc.model("party.party", "write", [self.party_id(code)], {"name": name})

    def until_listed(self, *party_ids: int) -> None:
        """Wait until a list read returns these parties: Tryton reads leave out changes younger than the
        server clock's last second, so a party made this instant is seen a moment later."""
        wanted = {str(i) for i in party_ids}
        wait_for(lambda: wanted <= read_all(self.erp.reader(), "party").keys(), 10, f"parties {sorted(wanted)} listed")

    def delete_crm_customer(self, customer_no: str) -> None:
        """The sample CRM has no delete endpoint; drop the row as a CRM purge would."""
        with self.crm.lock:
            table = self.crm.customers
            del table.rows[customer_no]
            del table.moments[customer_no]
            table._index = None  # rebuilt on the next list read

    def stop_worker(self) -> None:
        self.worker.stop()


@pytest.fixture(scope="module")
def synced(
    tryton: LocalTryton,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    state = tmp_path_factory.mktemp("reconcile")
    crm = SampleCrm(token=CRM_TOKEN).start()
    crm.seed(customers=len(CUSTOMERS), orders_per_customer=0, with_bad_records=False)
    crm.upsert_customer(
        {
            "customer_no": NAMELESS,
            "company": "  ",
            "email": "x@nameless.example",
            "tier": "bronze",
            "status": "active",
            "billing": {"street": "Weg 1", "zip": "10115", "city": "Berlin", "country": "DE"},
        }
    )
    crm.upsert_customer(
        {
            "customer_no": NO_EMAIL,
            "company": "No Mail KG",
            "phone": "+49 30 1111",
            "tier": "silver",
            "status": "active",
            "billing": {"street": "Ring 2", "zip": "20095", "city": "Hamburg", "country": "DE"},
        }
    )
    patch = pytest.MonkeyPatch()
    patch.setenv("RECONCILE_CRM_TOKEN", CRM_TOKEN)
    patch.setenv("RECONCILE_TRYTON_PASSWORD", tryton.password)
    config_path = write_config(state / "isthmus.yaml", crm.url, tryton, state)
    erp_settings = tryton.system_settings({"party": {"read": {}}})
    erp_settings["settle_s"] = 0
    erp = TrytonAdapter("erp-user", erp_settings)
    worker = Worker(load_config(config_path), serve_health=False).start()
    world = World(crm, tryton, config_path, worker, erp)
    try:
        everyone = [*CUSTOMERS, NO_EMAIL]
        wait_for(lambda: all(world.party(code) for code in everyone), 90, "every CRM customer to be a Tryton party")
        yield world
    finally:
        worker.stop()
        erp.close()
        crm.stop()
        patch.undo()
