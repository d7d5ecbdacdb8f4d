"""Reconcile links what a half-done create left unlinked, instead of calling it missing (real Tryton).

A worker killed after Tryton created a party but before the cross-reference was recorded
leaves a party that no link points at. Reported as "missing", `--heal` would create that
party a second time; found by its business key (the party's code), it is linked and compared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.adapter import WriteRequest
from middleware.config import load_config
from middleware.reconcile.engine import Connections, Reconciler, plan_route, read_all
from middleware.store.base import RecordRef
from tests.reconcile.conftest import CRM_TOKEN, ROUTE, wait_for, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tryton: LocalTryton, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SampleCrm, Path]]:
    crm = SampleCrm(token=CRM_TOKEN).start()
    monkeypatch.setenv("RECONCILE_CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("RECONCILE_TRYTON_PASSWORD", tryton.password)
    yield crm, write_config(tmp_path / "isthmus.yaml", crm.url, tryton, tmp_path)
    crm.stop()


def _customer(code: str, company: str) -> dict[str, object]:
    return {
        "customer_no": code,
        "company": company,
        "email": f"{code.lower()}@example.com",
        "tier": "gold",
        "status": "active",
        "billing": {"street": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "country": "DE"},
    }


def test_an_unlinked_target_found_by_business_key_is_linked_not_missing(
    world: tuple[SampleCrm, Path], tryton: LocalTryton
) -> None:
    crm, config_path = world
    tag = uuid.uuid4().hex[:6].upper()
    half_done, never_synced = f"K-{tag}-1", f"K-{tag}-2"
    crm.upsert_customer(_customer(half_done, "Half Done GmbH"))
    crm.upsert_customer(_customer(never_synced, "Never Synced AG"))
    config = load_config(config_path)
    connections = Connections(config)
    erp = TrytonAdapter("erp-user", {**tryton.system_settings({"party": {"read": {}}}), "settle_s": 0})
    try:
        # what the route's write did before the worker died: the party exists, the xref does not
        mapped = Reconciler(config, plan_route(config, ROUTE), connections.store, connections.adapter).map_record(
            crm.customer(half_done) or {}
        )
        assert mapped is not None
        writer = connections.adapter("tryton").writer()
        (made,) = writer.write_batch([WriteRequest("party", mapped, "k@1")])
        assert made.outcome == "ok", made.error
        target_reader = connections.adapter("tryton").reader()
        wait_for(lambda: str(made.target_id) in read_all(target_reader, "party"), 10, "the party to be listed")
        plan = plan_route(config, ROUTE)
        plan.settings.orphans = "none"  # the session's Tryton holds other tests' parties

        report = Reconciler(config, plan, connections.store, connections.adapter).run()

        assert report.linked == {half_done: made.target_id}
        missing = {d.source_id for d in report.drift if d.kind == "missing"}
        assert missing == {never_synced}, report.drift
        assert report.in_sync == 1
        linked = connections.store.lookup(RecordRef("crm", "customer", half_done), "tryton")
        assert linked == RecordRef("tryton", "party", str(made.target_id))

        again = Reconciler(config, plan, connections.store, connections.adapter).run()
        assert again.linked == {} and again.in_sync == 1  # linked once, then an ordinary pair
        codes = erp.rpc.model("party.party", "search_read", [("code", "=", half_done)], 0, None, None, ["code"])
        assert len(codes) == 1
    finally:
        erp.close()
        connections.close()
