"""The `reconcile:` section is checked at load like the rest of isthmus.yaml, and heal messages carry provenance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from middleware.adapter import SourceRecord
from middleware.config import Feed, load_config
from middleware.errors import ConfigError
from middleware.message import Envelope
from middleware.reconcile.engine import H_ORIGIN, plans_for, resend_message

REPO = Path(__file__).resolve().parents[2]


def config_text(reconcile: dict[str, object], *, party_read: bool = True, second_source: bool = False) -> str:
    customer_read = {
        "path": "/api/customers",
        "id_field": "customer_no",
        "updated_field": "updated_at",
        "item_path": "/api/customers/{id}",
    }
    sources = [{"name": "crm_customers", "system": "crm", "entity": "customer", "emits": "customer.upserted"}]
    if second_source:
        sources.append({"name": "shop_customers", "system": "crm", "entity": "shopper", "emits": "customer.upserted"})
    config = {
        "mappings": [str(REPO / "mappings")],
        "systems": {
            "crm": {
                "type": "rest",
                "base_url": "http://127.0.0.1:1",
                "entities": {"customer": {"read": customer_read}, "shopper": {"read": customer_read}},
            },
            "erp": {
                "type": "rest",
                "base_url": "http://127.0.0.1:2",
                "entities": {
                    "account": {
                        **(
                            {"read": {**customer_read, "path": "/api/accounts", "id_field": "id"}} if party_read else {}
                        ),
                        "write": {"mode": "upsert", "path": "/api/accounts/{key}", "key_field": "external_ref"},
                    }
                },
            },
        },
        "sources": sources,
        "routes": [
            {
                "name": "customers_to_erp",
                "on": ["customer.upserted"],
                "from_system": "crm",
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_erp"],
                "to": {"system": "erp", "entity": "account"},
            }
        ],
        "reconcile": reconcile,
    }
    return yaml.safe_dump(config, sort_keys=False)


def problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "isthmus.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_a_good_reconcile_section_loads_and_plans_the_route(tmp_path: Path) -> None:
    path = tmp_path / "isthmus.yaml"
    path.write_text(config_text({"customers_to_erp": {"cron": "*/15 * * * *", "ignore_fields": ["email"]}}))
    config = load_config(path)
    (plan,) = plans_for(config, "customer")
    assert (plan.name, plan.source_label, plan.target_label) == ("customers_to_erp", "crm.customer", "erp.account")
    assert plan.settings.ignore_fields == ["email"]
    assert plans_for(config, "crm.customer") == [plan] == plans_for(config, route="customers_to_erp")


def test_unknown_route_is_reported_with_the_nearest_name(tmp_path: Path) -> None:
    found = problems(tmp_path, config_text({"customers_to_epr": {}}))
    assert "no route 'customers_to_epr' to reconcile" in found and "customers_to_erp" in found
    assert "isthmus.yaml:" in found  # with its place in the file


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"every": "15m", "cron": "* * * * *"}, "exactly one"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"every": "soon"}, "is not like 15m"),
        ({"orphans": "some"}, "orphans"),
        ({"heel": True}, "heel"),
    ],
)
def test_bad_settings_are_refused_at_load(tmp_path: Path, settings: dict[str, object], complaint: str) -> None:
    assert complaint in problems(tmp_path, config_text({"customers_to_erp": settings}))


def test_a_target_without_read_settings_cannot_be_reconciled(tmp_path: Path) -> None:
    found = problems(tmp_path, config_text({"customers_to_erp": {}}, party_read=False))
    assert "entity 'account' of system 'erp' has no 'read:' settings" in found


def test_a_route_fed_by_two_sources_needs_one_named(tmp_path: Path) -> None:
    found = problems(tmp_path, config_text({"customers_to_erp": {}}, second_source=True))
    assert "fed by 2 sources (crm_customers, shop_customers)" in found and "reconcile.customers_to_erp.source" in found
    path = tmp_path / "named.yaml"
    path.write_text(config_text({"customers_to_erp": {"source": "shop_customers"}}, second_source=True))
    (plan,) = plans_for(load_config(path), route="customers_to_erp")
    assert plan.feed.entity == "shopper"
    assert "no source or webhook endpoint 'crm'" in problems(
        tmp_path, config_text({"customers_to_erp": {"source": "crm"}})
    )


def test_item_path_must_name_the_id(tmp_path: Path) -> None:
    text = config_text({}).replace("/api/customers/{id}", "/api/customers/{customer_no}")
    assert "must hold one placeholder, {id}" in problems(tmp_path, text)


def test_a_re_emitted_record_has_a_fresh_key_its_own_change_time_and_its_provenance() -> None:
    changed = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    record = SourceRecord("C-1001", "7", changed, {"customer_no": "C-1001"})
    feed = Feed("crm_customers", "crm", "customer", "customer.upserted")
    message, envelope = resend_message(feed, record, "reconcile", "abc123")
    assert envelope.idempotency_key == "crm:customer:C-1001@7+reconcile-abc123"
    assert envelope.occurred_at == changed and envelope.correlation_id == "reconcile-abc123"
    assert message.headers[H_ORIGIN] == "reconcile:abc123" and message.key == "crm:customer:C-1001"
    assert Envelope.from_bytes(message.body).payload == {"customer_no": "C-1001"}
