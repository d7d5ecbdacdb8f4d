"""Two paths touch one record: a full record from the CRM poll, then a partial one from its webhook.

Issue 12's data loss: the CRM's account webhook carries no address. Here the sample CRM is
polled (the full record) and its webhook (the same customer without `billing` or `email`)
feeds the same two-way route, as `validate` now insists. Against the real Tryton: the webhook
renames the party, the party keeps its address, and the Tryton → CRM direction writes no blank
back over the CRM.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from middleware.broker.base import dlq_name
from tests.twoway.conftest import TwoWay, wait_until
from tests.twoway.test_two_way_sync import assert_quiet, synced

pytestmark = pytest.mark.slow  # a real trytond and worker: end to end


def with_webhook(two_way: TwoWay) -> None:
    two_way.write_config()
    config = yaml.safe_load(two_way.config_path.read_text(encoding="utf-8"))
    config["webhooks"] = {
        "port": 0,
        "endpoints": {
            "crm_account_hook": {
                "path": "/hooks/crm/accounts",
                "system": "crm",
                "entity": "customer",
                "message_type": "customer.upserted",  # the two-way route's own messages
                "id_field": "customer_no",
                "version_field": "version",
                "occurred_field": "updated_at",
            }
        },
    }
    two_way.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def post(url: str, event: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback test server
        return int(answer.status)


def test_a_partial_webhook_after_a_full_poll_keeps_the_address_on_both_sides(two_way: TwoWay, tag: str) -> None:
    with_webhook(two_way)
    number = f"TW-P{tag}"
    two_way.new_customer(number)
    worker = two_way.start()
    synced(two_way, number)
    party = two_way.party(number)
    assert party["addresses."][0]["city"] == "Berlin" and party["email"]

    # the CRM renames the account; its webhook says so without the address or the e-mail
    renamed = two_way.crm.upsert_customer({"customer_no": number, "company": "Renamed by webhook AG"})
    assert worker.webhook is not None
    status = post(
        worker.webhook.url + "/hooks/crm/accounts",
        {"customer_no": number, "company": "Renamed by webhook AG", "version": f"hook-{renamed['version']}",
         "updated_at": datetime.now(UTC).isoformat()},
    )
    assert status in (200, 202)
    wait_until(lambda: two_way.party(number)["name"] == "Renamed by webhook AG", 30, "the new name in Tryton")
    assert_quiet(two_way, number)

    party = two_way.party(number)
    assert [a["city"] for a in party["addresses."]] == ["Berlin"]  # not blanked, not duplicated
    assert party["email"] == f"sales@{number.lower()}.example"
    customer = two_way.crm_customer(number)
    assert customer["billing"] == {"street": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "country": "DE"}
    assert customer["email"] == f"sales@{number.lower()}.example"
    for route in worker.config.model.routes:
        assert worker.broker.depth(dlq_name(route.name)) == 0, route.name
