"""The SOAP adapter passes the shared adapter contract, against the spyne legacy ERP's customers.

Customers are read by `ListCustomersChangedSince` and written by `CreateCustomer` /
`UpdateCustomer` (WS-Security UsernameToken). Faults: the WSDL loads but its endpoint is a
closed port; a **Server** fault whose text repeats the password (as a careless server might);
an HTTP 400 page from a gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from legacy_erp import LegacyErp
from soap_settings import PASSWORD, soap_config

from adapters.soap import SoapAdapter
from middleware.testing.adapter_contract import AdapterKit, Fault, adapter_contract_tests


class SoapKit(AdapterKit):
    adapter_class = SoapAdapter
    entity = "customer"

    def __init__(self, erp: LegacyErp, closed_port: int) -> None:
        self.erp = erp
        self.closed_port = closed_port

    def settings(self) -> dict[str, Any]:
        return soap_config(self.erp)

    def secrets(self) -> list[str]:
        return [PASSWORD]

    @contextmanager
    def fault(self, kind: Fault) -> Iterator[dict[str, Any]]:
        if kind == "unreachable":
            yield soap_config(self.erp, endpoint=f"http://127.0.0.1:{self.closed_port}/")
            return
        if kind == "server_error":
            self.erp.server_fault = f"database unavailable (login isthmus/{PASSWORD})"
        else:
            self.erp.http_error = 400
        try:
            yield self.settings()
        finally:
            self.erp.server_fault, self.erp.http_error = None, None

    def seed(self, tag: str, count: int) -> list[str]:
        ids = [f"S{tag}{n}" for n in range(count)]
        for customer_id in ids:
            self.erp.put_customer(customer_id, f"Seeded {tag}", datetime.now(UTC))
        return ids

    def record(self, tag: str, version: int) -> dict[str, Any]:
        return {"external_ref": f"K-{tag}", "name": self.name(tag, version)}

    def bad_record(self, tag: str) -> dict[str, Any]:
        return {"external_ref": f"K-{tag}"}  # no name: a Client.Validation fault

    def stored_name(self, target_id: str) -> str | None:
        with self.erp.lock:
            found = self.erp.customers.get(target_id)
            return found["name"] if found else None

    def count(self, tag: str) -> int:
        with self.erp.lock:
            return sum(1 for c in self.erp.customers.values() if tag in str(c.get("name")))


@pytest.fixture
def soap_kit(legacy_erp: LegacyErp, closed_port: int) -> SoapKit:
    return SoapKit(legacy_erp, closed_port)


TestSoapContract = adapter_contract_tests("soap_kit")
