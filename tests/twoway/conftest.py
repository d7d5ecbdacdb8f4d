"""Fixtures for the two-way tests: the real Tryton of tests/adapters/tryton, a sample CRM on
loopback, and a real Worker running deploy/demo/tryton_two_way.yaml against both.

The Tryton fixtures are imported, not copied: `tryton` (a trytond on a copy of the prepared
SQLite database, one per session and folder) and `tag` (a unique code per test).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.runtime.worker import Worker
from middleware.store import open_store
from middleware.yamlsource import load_yaml_file
from tests.adapters.tryton.conftest import tag, tryton  # noqa: F401 - fixtures shared with the adapter tests

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "demo" / "tryton_two_way.yaml"
CRM_TOKEN = "two-way-token"
CUSTOMER_ROUTES = ("customers_crm_to_tryton", "customers_tryton_to_crm")


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


class TwoWay:
    """The sample CRM, the session's Tryton and a worker on the two-way demo configuration."""

    def __init__(self, tmp_path: Path, server: LocalTryton, crm: SampleCrm) -> None:
        self.tmp_path = tmp_path
        self.crm = crm
        self.config_path = tmp_path / "isthmus.yaml"
        self.worker: Worker | None = None
        # a Tryton user's session (its writer stands in for a user creating a product in the client)
        self.erp = TrytonAdapter("test-user", server.system_settings({"product": {"write": {"key_field": "code"}}}))

    def write_config(self, conflicts: dict[str, Any] | None = None) -> Path:
        config = load_yaml_file(CONFIG).data
        config["broker"] = f"embedded:///{self.tmp_path}/broker.db"
        config["store"] = f"sqlite:///{self.tmp_path}/state.db"
        config["mappings"] = [str(REPO / "mappings")]
        config["observability"] = {"port": 0, "log_format": "json", "log_level": os.environ.get("TW_LOG", "warning")}
        config["systems"]["tryton"]["settle_s"] = 0.2
        for source in config["sources"]:
            source["poll_interval_s"] = 0.2 if source["system"] == "crm" else 0.3
        for route in config["routes"]:
            route["retry"] = {"max_attempts": 6, "initial_delay_s": 0.2, "max_delay_s": 1.0}
            if conflicts is not None and route["name"] in CUSTOMER_ROUTES:
                route["two_way"]["conflicts"] = conflicts
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        # Tryton holds the records of other tests and of its setup: read only what changes from now on
        start = (self.erp.rpc.now() - timedelta(seconds=1)).isoformat()
        store = open_store(f"sqlite:///{self.tmp_path}/state.db")
        try:
            for source in ("tryton_parties", "tryton_products"):
                if store.get_watermark(f"source:{source}") is None:
                    store.set_watermark(f"source:{source}", start)
        finally:
            store.close()
        return self.config_path

    def start(self) -> Worker:
        assert self.worker is None, "the worker runs already"
        self.worker = Worker(load_config(self.config_path), serve_health=False).start()
        return self.worker

    def read_both(self, routes: tuple[str, ...] = CUSTOMER_ROUTES, timeout_s: float = 30) -> None:
        """Run only the sources until each route has a change waiting, then stop them.

        So both systems' changes are read before either is applied: a worker started right after
        edits in both systems could write one change over the other before its poller had read
        it, and that overwritten change no poll can ever see (see middleware/sync/twoway.py, Limits)."""
        assert self.worker is None, "stop the worker first"
        reader = Worker(load_config(self.config_path), run_routes=False, serve_health=False).start()
        try:
            wait_until(lambda: all(reader.broker.depth(r) >= 1 for r in routes), timeout_s, "both changes read")
        finally:
            reader.stop()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    # ----- the two systems ----------------------------------------------------------------
    def party(self, code: str) -> dict[str, Any]:
        rows = self.erp.rpc.model(
            "party.party",
            "search_read",
            [("code", "=", code)],
            0,
            None,
            None,
            ["name", "email", "phone", "active", "write_date", "addresses", "contact_mechanisms",
             "customer_payment_term.name", "addresses.city"],
            context={"active_test": False},
        )
        return rows[0] if rows else {}

    def edit_party(self, code: str, **changes: Any) -> None:
        """Change a party as Tryton's client does: one write of the party (its address and contact
        mechanisms included, so the party's write_date moves)."""
        party = self.party(code)
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = changes["name"]
        if "city" in changes:
            values["addresses"] = [["write", [party["addresses"][0]], {"city": changes["city"]}]]
        if "payment_terms" in changes:
            (term,) = self.erp.rpc.model(
                "account.invoice.payment_term", "search", [("name", "=", changes["payment_terms"])], 0, 1, None
            )
            values["customer_payment_term"] = term
        kinds = self.erp.rpc.model("party.contact_mechanism", "read", party["contact_mechanisms"], ["type"])
        mechanisms = {m["type"]: m["id"] for m in kinds}
        ops = [["write", [mechanisms[k]], {"value": changes[k]}] for k in ("email", "phone") if k in changes]
        if ops:
            values["contact_mechanisms"] = ops
        self.erp.rpc.model("party.party", "write", [party["id"]], values)

    def crm_customer(self, number: str) -> dict[str, Any]:
        return self.crm.customer(number) or {}

    def crm_writes(self, entity: str = "customer") -> int:
        return int(self.crm.state(with_effects=False)["api_writes"][entity])

    def new_customer(self, number: str, **fields: Any) -> dict[str, Any]:
        record = {
            "customer_no": number,
            "company": f"Company {number}",
            "email": f"sales@{number.lower()}.example",
            "phone": "+49 30 1000",
            "status": "active",
            "payment_terms": "Direct",
            "billing": {"street": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "country": "DE"},
            **fields,
        }
        return self.crm.upsert_customer(record)

    def close(self) -> None:
        self.stop()
        self.erp.close()


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token=CRM_TOKEN).start()
    yield service
    service.stop()


@pytest.fixture
def two_way(
    tmp_path: Path, tryton: LocalTryton, crm: SampleCrm, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> Iterator[TwoWay]:
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("TRYTON_URL", tryton.url)
    monkeypatch.setenv("TRYTON_PASSWORD", tryton.password)
    harness = TwoWay(tmp_path, tryton, crm)
    yield harness
    harness.close()
