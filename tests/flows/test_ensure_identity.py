"""An `ensure` step creates its record under the identity claim routes use.

The target is the sample ERP as a real HTTP server (no Idempotency-Key dedupe), written by the
REST adapter with `key_field: external_ref` and `find:`; the store is a real SQLite file. A
record that a route created under the same business key is linked by the step, not created
again; a claim a killed writer left is recovered by finding the record by key.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.rest import RestAdapter, RestSystemConfig
from deploy.demo.sample_erp import SampleErp
from middleware.adapter import Adapter
from middleware.broker import open_broker
from middleware.broker.base import Broker
from middleware.flows import FlowEngine, compile_flow
from middleware.flows.runner import WorkerFlowServices
from middleware.flows.steps import Ensure
from middleware.mapping import load_mappings
from middleware.store import open_store
from middleware.store.base import IdentityWrite, RecordRef, Store, TargetIdentity
from middleware.yamlsource import load_yaml_text

REPO = Path(__file__).resolve().parents[2]

FLOW = """
flow: onboard
key: customer_no
steps:
  - name: account
    kind: ensure
    target: {system: erp, entity: account}
    xref: {system: crm, entity: customer, id: record.customer_no}
    create: {mappings: [crm_customer_to_canonical, canonical_customer_to_erp]}
"""

ERP_ACCOUNT = {
    "write": {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": "/api/accounts"},
        "update": {"method": "PUT", "path": "/api/accounts/{target_id}"},
        "id_path": "id",
        "key_field": "external_ref",
        "find": {"path": "/api/accounts", "param": "external_ref", "records_path": "items"},
    }
}


@pytest.fixture
def erp() -> Iterator[SampleErp]:
    server = SampleErp(advance_every_s=0, dedupe=False).start()
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path: Path, erp: SampleErp) -> Iterator[tuple[FlowEngine, Store]]:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    brokers: list[Broker] = []
    config = RestSystemConfig.model_validate({"base_url": erp.url, "entities": {"account": ERP_ACCOUNT}})
    adapter = RestAdapter("erp", config)

    def new_broker() -> Broker:
        brokers.append(open_broker(f"embedded:///{tmp_path}/broker.db"))
        return brokers[-1]

    def adapters(system: str) -> Adapter:
        assert system == "erp"
        return adapter

    flow, problems = compile_flow(
        load_yaml_text(FLOW, "onboard.yaml"),
        load_mappings([REPO / "mappings"]),
        {"erp": ("rest", config), "crm": ("rest", RestSystemConfig(base_url="http://127.0.0.1:1"))},
    )
    assert not problems and flow is not None, problems
    yield FlowEngine(flow, WorkerFlowServices(store, adapters, new_broker)), store
    for handle in brokers:
        handle.close()
    store.close()


def customer(no: str) -> dict[str, Any]:
    return {
        "customer_no": no,
        "company": "Acme GmbH",
        "tier": "gold",
        "status": "active",
        "billing": {"street": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "country": "DE"},
        "updated_at": "2026-11-24T10:00:00+08:00",
    }


def _create_directly(erp: SampleErp, no: str) -> str:
    body = json.dumps({"external_ref": no, "account_name": "Acme"}).encode()
    req = urllib.request.Request(
        f"{erp.url}/api/accounts", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return str(json.loads(response.read())["id"])


def test_ensure_creates_claims_and_links_the_record(world: tuple[FlowEngine, Store], erp: SampleErp) -> None:
    engine, store = world
    assert engine.start(customer("C-1"), "in:C-1@1") == "completed"
    (account,) = erp.accounts.values()
    identity = TargetIdentity("erp", "account", "C-1")
    assert store.claim_identities([identity], "x", 60)[identity].target_id == account["id"]
    assert store.lookup(RecordRef("crm", "customer", "C-1"), "erp") == RecordRef("erp", "account", account["id"])


def test_ensure_links_what_a_route_created_under_the_same_key(world: tuple[FlowEngine, Store], erp: SampleErp) -> None:
    engine, store = world
    account_id = _create_directly(erp, "C-1")  # a route created it, from another source record
    identity = TargetIdentity("erp", "account", "C-1")
    store.claim_identities([identity], "route", 60)
    store.mark_applied("route", [], identity=IdentityWrite("route", linked=[(identity, account_id)]))
    assert engine.start(customer("C-1"), "in:C-1@1") == "completed"
    assert list(erp.accounts) == [account_id], "the step created the account a second time"
    assert store.lookup(RecordRef("crm", "customer", "C-1"), "erp") == RecordRef("erp", "account", account_id)


def test_ensure_recovers_a_killed_writers_claim_by_finding_the_record(
    world: tuple[FlowEngine, Store], erp: SampleErp
) -> None:
    engine, store = world
    account_id = _create_directly(erp, "C-1")  # created, then the writer was killed before linking
    identity = TargetIdentity("erp", "account", "C-1")
    store.claim_identities([identity], "killed", 60)
    (step,) = engine.flow.steps
    assert isinstance(step.action, Ensure)
    step.action.claim_lease_s = 0.2
    time.sleep(0.3)
    assert engine.start(customer("C-1"), "in:C-1@1") == "completed"
    assert list(erp.accounts) == [account_id]
    assert store.claim_identities([identity], "x", 60)[identity].target_id == account_id
