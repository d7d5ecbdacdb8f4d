"""Heal re-creates a deleted target record and re-points its identity claim with the xref.

Otherwise every writer of that business key would keep updating the deleted record (the claim
says it exists) and be dead-lettered. Real sample ERP over HTTP, real SQLite store, the demo
configuration with ERP accounts keyed by external_ref (`key_field` + `find:`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from adapters.rest import RestAdapter
from deploy.demo.sample_erp import SampleErp
from middleware.adapter import SourceRecord
from middleware.config import load_config
from middleware.reconcile.engine import Drift, plan_route, recreate_targets
from middleware.store import open_store
from middleware.store.base import IdentityWrite, RecordRef, TargetIdentity
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def erp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleErp]:
    server = SampleErp(advance_every_s=0).start()
    monkeypatch.setenv("DEMO_ERP_URL", server.url)
    yield server
    server.stop()


def test_recreating_a_deleted_account_repoints_its_identity_claim(erp: SampleErp, tmp_path: Path) -> None:
    config = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data
    config["mappings"] = [str(REPO / "mappings")]
    account = config["systems"]["erp"]["entities"]["account"]["write"]
    account.update(
        key_field="external_ref", find={"path": "/api/accounts", "param": "external_ref", "records_path": "items"}
    )
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    loaded = load_config(path)
    plan = plan_route(loaded, "customers_crm_to_erp")
    system_type, system_config = loaded.systems["erp"]
    writer = RestAdapter("erp", system_config).writer()  # type: ignore[arg-type]
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    identity = TargetIdentity("erp", "account", "C-1")
    store.mark_applied("customers_crm_to_erp", [], identity=IdentityWrite("route", linked=[(identity, "A-GONE")]))
    store.link(RecordRef("crm", "customer", "C-1"), RecordRef("erp", "account", "A-GONE"))
    drift = Drift(
        kind="missing",
        source_id="C-1",
        target_id="A-GONE",
        reason="linked target no longer exists",
        target_deleted=True,
        record=SourceRecord("C-1", "3", datetime.now(UTC), {"customer_no": "C-1"}),
        mapped={"external_ref": "C-1", "account_name": "Acme"},
    )
    try:
        recreated, failed = recreate_targets(plan, store, writer, [drift], "run1")
        assert not failed, failed
        (account,) = erp.accounts.values()
        assert recreated == {"C-1": account["id"]}
        assert store.claim_identities([identity], "next", 60)[identity].target_id == account["id"]
        assert store.lookup(RecordRef("crm", "customer", "C-1"), "erp") == RecordRef("erp", "account", account["id"])
    finally:
        store.close()
    assert system_type == "rest"
