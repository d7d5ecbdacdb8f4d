"""The REST adapter passes the shared adapter contract, against the sample CRM's customers.

The kit reads and writes customers of the real loopback sample CRM (bearer token); faults
come from a closed port and from the scripted stub server answering 503 or 400 with the
request's headers echoed back (the token among them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_faults import HttpFaults
from http_stub import Respond, StubServer

from adapters.rest import RestAdapter
from deploy.demo.sample_crm import SampleCrm
from middleware.testing.adapter_contract import adapter_contract_tests

TOKEN = "contract-crm-token-5150"


class RestKit(HttpFaults):
    adapter_class = RestAdapter
    entity = "customer"

    def __init__(self, crm: SampleCrm, closed_port: int, stub_server: Callable[[Respond], StubServer]) -> None:
        super().__init__(closed_port, stub_server)
        self.crm = crm

    def settings(self, url: str | None = None) -> dict[str, Any]:
        return {
            "base_url": url or self.crm.url,
            "timeout_s": 2,
            "auth": {"type": "bearer", "token": TOKEN},
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
                        "pagination": {"type": "page", "page_size": 5},
                    },
                    "write": {
                        "mode": "create_or_update",
                        "create": {"method": "PATCH", "path": "/api/customers/{customer_no}"},
                        "update": {"method": "PATCH", "path": "/api/customers/{target_id}"},
                        "id_path": "customer_no",
                    },
                }
            },
        }

    def secrets(self) -> list[str]:
        return [TOKEN]

    def seed(self, tag: str, count: int) -> list[str]:
        return [self.crm.upsert_customer({"customer_no": f"K-{tag}-{n}", "name": f"Seeded {tag}"})["customer_no"]
                for n in range(count)]

    def unknown_id(self) -> str:
        return "K-NO-SUCH-CUSTOMER"

    def record(self, tag: str, version: int) -> dict[str, Any]:
        return {"customer_no": f"K-{tag}", "name": self.name(tag, version)}

    def bad_record(self, tag: str) -> dict[str, Any]:
        return {"name": self.name(tag, 1)}  # no customer_no: the writer refuses it before sending

    def stored_name(self, target_id: str) -> str | None:
        found = self.crm.customer(target_id)
        return found["name"] if found else None

    def count(self, tag: str) -> int:
        with self.crm.lock:
            return sum(1 for c in self.crm.customers.rows.values() if tag in str(c.get("name")))


@pytest.fixture
def rest_kit(closed_port: int, stub_server: Callable[[Respond], StubServer]) -> Iterator[RestKit]:
    crm = SampleCrm(token=TOKEN).start()
    yield RestKit(crm, closed_port, stub_server)
    crm.stop()


TestRestContract = adapter_contract_tests("rest_kit")
