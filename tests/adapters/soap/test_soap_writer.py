"""SOAP adapter, writing: create or update by cross-reference, order per record, every failure class."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from legacy_erp import LegacyErp
from soap_settings import CUSTOMER_WRITE, PASSWORD, WSSE, AdapterFactory

from middleware.adapter import WriteRequest, WriteResult

ACME = {
    "external_ref": "C-1001",
    "name": "Acme GmbH",
    "email": "sales@acme.example",
    "credit_limit": "25000.50",
    "blocked": False,
    "address": {"street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin", "country": "DE"},
}


def customer(ref: str = "C-1001", version: int = 1, target_id: str | None = None, **fields: Any) -> WriteRequest:
    record = {**ACME, "external_ref": ref, **fields}
    return WriteRequest("customer", record, key=f"crm:customer:{ref}@{version}", target_id=target_id,
                        correlation_id=f"corr-{ref}")


def write(adapter: Any, *requests: WriteRequest) -> list[WriteResult]:
    return adapter.writer().write_batch(list(requests))


def test_create_returns_the_new_id_from_the_answer(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    (result,) = write(soap_adapter(legacy_erp), customer())
    assert (result.outcome, result.status) == ("ok", 200)
    stored = legacy_erp.customers[result.target_id or ""]
    assert stored["name"] == "Acme GmbH" and stored["credit_limit"] == Decimal("25000.50")
    assert stored["address"] == ACME["address"] and stored["blocked"] is False
    assert legacy_erp.applied == [("CreateCustomer", result.target_id)]


def test_a_mixed_batch_gets_one_result_per_request_in_order(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    requests = [customer(f"C-{i}") for i in range(8)]
    requests[3] = customer("C-3", name="")  # the ERP refuses it
    results = write(soap_adapter(legacy_erp, concurrency=4), *requests)
    assert [r.outcome for r in results] == ["ok"] * 3 + ["permanent"] + ["ok"] * 4
    by_id = {r.target_id: r for r in results if r.target_id}
    assert {legacy_erp.customers[t]["external_ref"] for t in by_id} == {f"C-{i}" for i in range(8) if i != 3}


def test_order_with_lines_and_exact_decimals_returns_the_order_number(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    adapter = soap_adapter(legacy_erp)
    (account,) = write(adapter, customer())
    order = {
        "external_ref": "SO-5001",
        "customer_id": account.target_id,
        "order_date": "2026-11-24",
        "lines": {"OrderLine": [
            {"sku": "SKU-1", "quantity": "3", "unit_price": "19.90"},
            {"sku": "SKU-2", "quantity": "0.125", "unit_price": "1234567.891"},
        ]},
    }
    (result,) = write(adapter, WriteRequest("order", order, key="crm:order:SO-5001@1"))
    assert result.outcome == "ok" and result.target_id in legacy_erp.orders
    stored = legacy_erp.orders[result.target_id or ""]
    assert [line["unit_price"] for line in stored["lines"]] == [Decimal("19.90"), Decimal("1234567.891")]
    assert stored["lines"][1]["quantity"] == Decimal("0.125") and str(stored["order_date"]) == "2026-11-24"


def test_record_fields_can_be_the_arguments_and_constants_win(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    adapter = soap_adapter(legacy_erp)
    (created,) = write(adapter, customer())
    spread = {
        "update": {
            "operation": "UpdateCustomer",
            "target_id_argument": "customer_id",
            "arguments": {"customer": {"name": "Constant Name AG"}},
        },
        "create": CUSTOMER_WRITE["create"],
    }
    adapter2 = soap_adapter(legacy_erp, entities={"customer": {"write": spread}})
    request = WriteRequest("customer", {"customer": {"name": "From Record"}}, "k@2", target_id=created.target_id)
    (result,) = write(adapter2, request)
    assert result.outcome == "ok" and result.target_id == created.target_id  # no id_path: the known target id
    assert legacy_erp.customers[created.target_id or ""]["name"] == "Constant Name AG"


def test_calls_carry_idempotency_key_and_correlation_id(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    write(soap_adapter(legacy_erp), customer(version=7))
    (seen,) = [s for s in legacy_erp.seen if s.operation == "CreateCustomer"]
    assert seen.headers["idempotency-key"] == "crm:customer:C-1001@7"
    assert seen.headers["x-correlation-id"] == "corr-C-1001"


def test_client_fault_is_permanent_with_the_fault_text(any_soap_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    (result,) = write(soap_adapter(any_soap_erp), customer(name=" "))
    code = "Sender.Validation" if any_soap_erp.soap12 else "Client.Validation"
    assert result.outcome == "permanent"
    assert result.error == f"CreateCustomer: SOAP fault {code}: customer name is required"
    assert any_soap_erp.customers == {}


def test_server_fault_is_transient(any_soap_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    any_soap_erp.server_fault = "database is locked, try again"
    (result,) = write(soap_adapter(any_soap_erp), customer())
    code = "Receiver" if any_soap_erp.soap12 else "Server"
    assert result.outcome == "transient" and result.status == 500
    assert result.error == f"CreateCustomer: SOAP fault {code}: database is locked, try again"


def test_unknown_target_on_update_is_a_permanent_client_fault(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    (result,) = write(soap_adapter(legacy_erp), customer(target_id="K99999"))
    assert result.outcome == "permanent" and "Client.NotFound: no customer 'K99999'" in result.error


def test_a_hanging_erp_is_a_transient_timeout(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    adapter = soap_adapter(legacy_erp, timeout_s=0.5)
    adapter.client.binding()  # WSDL loaded before the ERP starts hanging
    legacy_erp.hang_s = 10
    started = time.monotonic()
    (result,) = write(adapter, customer())
    assert time.monotonic() - started < 3
    assert result.outcome == "transient" and result.error == "CreateCustomer timed out (timeout 0.5s)"


@pytest.mark.parametrize(("status", "outcome"), [(500, "transient"), (502, "transient"), (503, "transient"),
                                                 (404, "permanent"), (400, "permanent")])
def test_http_errors_without_a_soap_fault_are_classified_by_status(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, status: int, outcome: str
) -> None:
    adapter = soap_adapter(legacy_erp)
    adapter.client.binding()
    legacy_erp.http_error = status  # a gateway's HTML page (with a DOCTYPE), never parsed as SOAP
    (result,) = write(adapter, customer())
    assert (result.outcome, result.status) == (outcome, status)
    assert result.error.startswith(f"CreateCustomer → HTTP {status}: <!DOCTYPE html>")


@pytest.mark.parametrize("digest", [False, True])
def test_wrong_password_is_a_permanent_auth_failure_without_the_secret(
    any_soap_erp: LegacyErp, soap_adapter: AdapterFactory, digest: bool
) -> None:
    wrong = "wrong-password-9876"
    adapter = soap_adapter(any_soap_erp, auth={**WSSE, "password": wrong, "digest": digest})
    (result,) = write(adapter, customer())
    assert result.outcome == "permanent"
    assert "authentication failed" in result.error and "check systems.legacy_erp.auth" in result.error
    assert wrong not in result.error and PASSWORD not in result.error
    assert any_soap_erp.customers == {}


@pytest.mark.parametrize("digest", [False, True])
def test_right_password_as_text_or_digest_is_accepted(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, digest: bool
) -> None:
    (result,) = write(soap_adapter(legacy_erp, auth={**WSSE, "digest": digest}), customer())
    assert result.outcome == "ok"


def test_http_basic_credentials_go_with_the_wsdl_and_every_call(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    legacy_erp.require_basic = ("gateway", "gw-secret-42")  # e.g. a reverse proxy in front of the ERP
    (refused,) = write(soap_adapter(legacy_erp, auth=WSSE), customer())
    assert refused.outcome == "permanent" and refused.status == 401
    assert refused.error.startswith("loading the WSDL") and "authentication failed (HTTP 401)" in refused.error
    basic = soap_adapter(legacy_erp, auth={"type": "basic", "username": "gateway", "password": "gw-secret-42"})
    (result,) = write(basic, customer())
    # past the gateway (WSDL and call), the service itself still wants its WS-Security token
    assert result.outcome == "permanent" and "SOAP fault Client.Authentication" in result.error
    assert "gw-secret-42" not in result.error


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"loyalty_points": 7}, "unexpected keyword argument 'loyalty_points'"),
        ({"name": ["Acme", "GmbH"]}, "The String type doesn't accept collections"),
    ],
)
def test_a_record_that_does_not_fit_the_operation_is_permanent_and_not_sent(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, fields: dict[str, Any], reason: str
) -> None:
    (result,) = write(soap_adapter(legacy_erp), customer(**fields))
    assert result.outcome == "permanent"
    assert result.error.startswith("CreateCustomer: the record does not fit the operation:") and reason in result.error
    assert legacy_erp.seen == [] and result.status is None  # refused before anything was sent


def test_a_value_the_erp_schema_refuses_is_a_permanent_client_fault(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    (result,) = write(soap_adapter(legacy_erp), customer(credit_limit="lots"))
    assert result.outcome == "permanent" and "Client.SchemaValidationError" in result.error


def test_create_only_entity_refuses_a_record_the_target_already_holds(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    request = WriteRequest("order", {"external_ref": "SO-1"}, key="crm:order:SO-1@2", target_id="SO-00001")
    (result,) = write(soap_adapter(legacy_erp), request)
    assert result.outcome == "permanent" and "already exists" in result.error and "no 'update'" in result.error


def test_fault_rules_override_the_defaults(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    rules = [
        {"code": "Client.NotFound", "outcome": "transient"},  # e.g. the ERP replicates with a delay
        {"message": "*locked*", "outcome": "permanent"},
    ]
    adapter = soap_adapter(legacy_erp, fault_rules=rules)
    (not_found,) = write(adapter, customer(target_id="K99999"))
    assert not_found.outcome == "transient"
    legacy_erp.server_fault = "record locked by user MAYER"
    (locked,) = write(adapter, customer())
    assert locked.outcome == "permanent"


def test_wsdl_unavailable_at_start_is_transient_then_recovers(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    legacy_erp.http_error = 503
    adapter = soap_adapter(legacy_erp)  # built while the ERP is down: the worker still starts
    assert legacy_erp.http_requests == 0
    results = write(adapter, *(customer(f"C-{i}") for i in range(5)))
    assert {r.outcome for r in results} == {"transient"} and results[0].error.startswith("loading the WSDL")
    assert legacy_erp.http_requests == 1  # one try per batch, not one per record
    legacy_erp.http_error = None
    (up,) = write(adapter, customer())
    assert up.outcome == "ok"


def test_writing_an_entity_without_write_settings_is_permanent(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    (result,) = write(soap_adapter(legacy_erp), WriteRequest("stock", {"sku": "X"}, key="k@1"))
    assert result.outcome == "permanent" and "cannot write entity 'stock'" in result.error
