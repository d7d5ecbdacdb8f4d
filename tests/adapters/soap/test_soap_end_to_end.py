"""End to end: the README's legacy-ERP config run by a real worker on the embedded broker.

The sample CRM (REST) on loopback is the source, the sample legacy ERP (spyne SOAP) the
target; the config and the two ERP mappings are taken from `adapters/soap/README.md` as
written — only the broker and store paths, poll intervals and retry delays are shortened.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from legacy_erp import LegacyErp
from soap_settings import PASSWORD

from deploy.demo.sample_crm import SampleCrm
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, dlq_name
from middleware.config import load_config
from middleware.runtime.worker import Worker
from middleware.yamlsource import load_yaml_file
from tests.e2e.harness import REPO, expected_targets, wait_until

README = REPO / "adapters" / "soap" / "README.md"


def readme_blocks() -> tuple[str, dict[str, str]]:
    """(the isthmus.yaml block, mapping id → mapping block) from the README."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    configs = [b for b in blocks if b.startswith("# isthmus.yaml")]
    mappings = {b.split("\n", 1)[0].partition(":")[2].strip(): b for b in blocks if b.startswith("mapping:")}
    assert len(configs) == 1 and set(mappings) == {"canonical_customer_to_legacy_erp", "canonical_order_to_legacy_erp"}
    return configs[0], mappings


def readme_config(directory: Path) -> Path:
    text, mappings = readme_blocks()
    written = directory / "readme.yaml"
    written.write_text(text, encoding="utf-8")
    config = load_yaml_file(written).data  # the project's loader: `on:` stays a key, not YAML 1.1's true
    folder = directory / "mappings"
    shutil.copytree(REPO / "mappings", folder)
    for name, text in mappings.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    config["broker"] = f"embedded:///{directory}/broker.db"
    config["store"] = f"sqlite:///{directory}/state.db"
    config["observability"] = {"port": 0, "log_format": "json", "log_level": "warning", "depth_sample_interval_s": 0.5}
    for source in config["sources"]:
        source["poll_interval_s"] = 0.2
    for route in config["routes"]:
        route["retry"] = {"max_attempts": 8, "initial_delay_s": 0.1, "max_delay_s": 1.0}
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="crm-token-e2e").start()
    yield service
    service.stop()


@pytest.fixture
def env(crm: SampleCrm, legacy_erp: LegacyErp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", "crm-token-e2e")
    monkeypatch.setenv("LEGACY_ERP_WSDL", legacy_erp.wsdl_url)
    monkeypatch.setenv("LEGACY_ERP_PASSWORD", PASSWORD)


def erp_customers(erp: LegacyErp) -> dict[str, dict[str, Any]]:
    with erp.lock:
        return {c["external_ref"]: dict(c) for c in erp.customers.values()}


def erp_orders(erp: LegacyErp) -> dict[str, dict[str, Any]]:
    with erp.lock:
        return {o["external_ref"]: dict(o) for o in erp.orders.values()}


@pytest.mark.slow
@pytest.mark.usefixtures("env")
def test_crm_customers_and_orders_reach_the_soap_erp_once_and_updates_follow(
    crm: SampleCrm, legacy_erp: LegacyErp, tmp_path: Path
) -> None:
    crm.seed(customers=5, orders_per_customer=2, with_bad_records=True)
    good_customers, won_orders = expected_targets(crm)
    assert good_customers and won_orders
    worker = Worker(load_config(readme_config(tmp_path)), serve_health=False).start()
    try:
        wait_until(
            lambda: set(erp_customers(legacy_erp)) == good_customers and set(erp_orders(legacy_erp)) == won_orders,
            timeout_s=60,
            what="customers and won orders in the SOAP ERP",
        )
        customers = erp_customers(legacy_erp)
        acme = crm.customer("C-1001")
        assert acme is not None
        first = customers["C-1001"]
        assert first["name"] == acme["company"].strip() and first["email"] == acme["email"].lower()
        assert first["address"]["city"] == acme["billing"]["city"]
        assert first["customer_group"] in {"A", "B", "C"} and first["blocked"] is False
        created = [ref for op, ref in legacy_erp.applied if op == "CreateCustomer"]
        assert len(created) == len(set(created)) == len(good_customers)  # each customer created once

        # orders found their customer through the cross-reference the customer route stored
        for ref, order in erp_orders(legacy_erp).items():
            crm_order = crm.order(ref)
            assert crm_order is not None
            assert order["customer_id"] == customers[crm_order["customer_no"]]["customer_id"]
            assert [line["unit_price"] for line in order["lines"]] == [
                Decimal(line["price"]).quantize(Decimal("0.01")) for line in crm_order["lines"]
            ]

        # the nameless customer was refused by a Client fault and dead-lettered with it
        route = "customers_crm_to_legacy_erp"
        wait_until(lambda: worker.broker.depth(dlq_name(route)) == 1, 15, "the refused customer in the DLQ")
        (dead,) = worker.broker.browse(dlq_name(route), 10)
        assert dead.headers[H_ERROR_CLASS] == "PermanentError"
        assert "SOAP fault Client.Validation: customer name is required" in dead.headers[H_ERROR]

        # a later change in the CRM updates the same ERP customer (UpdateCustomer, not a second create)
        crm.upsert_customer({"customer_no": "C-1001", "company": "Renamed After Sync AG"})
        wait_until(
            lambda: erp_customers(legacy_erp)["C-1001"]["name"] == "Renamed After Sync AG", 20, "the update"
        )
        assert erp_customers(legacy_erp)["C-1001"]["customer_id"] == first["customer_id"]
        assert ("UpdateCustomer", first["customer_id"]) in legacy_erp.applied
        assert len(legacy_erp.customers) == len(good_customers)
        assert worker.alive()
    finally:
        worker.stop()
