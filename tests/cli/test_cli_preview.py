"""`isthmus preview`: what a route would write for a sample record, without any system running."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.cli_runner import MAPPINGS, SAMPLES, RunIsthmus

CUSTOMER_CHAIN = "crm_customer_to_canonical,canonical_customer_to_erp"
ORDER_CHAIN = "crm_order_to_canonical,canonical_order_to_erp"


def test_one_mapping_prints_the_canonical_record(isthmus: RunIsthmus) -> None:
    run = isthmus("preview", "crm_customer_to_canonical", SAMPLES / "crm_customer.json", "--paths", MAPPINGS)
    assert run.code == 0, run.output
    customer = json.loads(run.out)
    assert customer["customer_id"] == "C-1001"
    assert customer["name"] == "Acme GmbH"
    assert customer["email"] == "sales@acme.example"
    assert customer["updated_at"] == "2026-11-24T02:00:00Z"


def test_chain_prints_the_target_write_body(isthmus: RunIsthmus) -> None:
    run = isthmus("preview", CUSTOMER_CHAIN, SAMPLES / "crm_customer.json", "--paths", MAPPINGS)
    assert run.code == 0, run.output
    assert json.loads(run.out) == {
        "account_name": "Acme GmbH",
        "external_ref": "C-1001",
        "email": "sales@acme.example",
        "phone": "+49 30 1234",
        "vat_number": "DE123456789",
        "customer_group": "A",
        "blocked": False,
        "address": {"street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin", "country": "DE"},
    }


def test_chain_with_xref_resolves_the_linked_id(isthmus: RunIsthmus) -> None:
    run = isthmus(
        "preview",
        ORDER_CHAIN,
        SAMPLES / "crm_order.json",
        "--paths",
        MAPPINGS,
        "--xref",
        "crm:customer:C-1001=erp:A-7",
    )
    assert run.code == 0, run.output
    order = json.loads(run.out)
    assert order["account_id"] == "A-7"
    assert order["external_ref"] == "SO-5001"
    assert [(line["line_no"], line["item"]) for line in order["lines"]] == [(1, "WIDGET-1"), (2, "GADGET-7")]


def test_missing_xref_says_which_link_to_pass_instead_of_retrying(isthmus: RunIsthmus) -> None:
    run = isthmus("preview", ORDER_CHAIN, SAMPLES / "crm_order.json", "--paths", MAPPINGS)
    run.assert_no_traceback()
    assert run.code == 2, run.output
    assert run.out == ""
    assert "crm customer 'C-1001'" in run.err
    assert "--xref crm:customer:C-1001=erp:" in run.err
    assert "retrying" not in run.err, "preview never retries; the message must not say it does"


def test_list_sample_prints_a_list(isthmus: RunIsthmus, tmp_path: Path) -> None:
    record = json.loads((SAMPLES / "crm_customer.json").read_text())
    sample = tmp_path / "customers.json"
    sample.write_text(json.dumps([record, {**record, "customer_no": "C-1002", "tier": "silver"}]))
    run = isthmus("preview", CUSTOMER_CHAIN, sample, "--paths", MAPPINGS)
    assert run.code == 0, run.output
    accounts = json.loads(run.out)
    assert [(a["external_ref"], a["customer_group"]) for a in accounts] == [("C-1001", "A"), ("C-1002", "B")]


def test_malformed_xref_argument_shows_the_expected_form(isthmus: RunIsthmus) -> None:
    run = isthmus(
        "preview",
        ORDER_CHAIN,
        SAMPLES / "crm_order.json",
        "--paths",
        MAPPINGS,
        "--xref",
        "C-1001=A-7",
    )
    run.assert_no_traceback()
    assert run.code == 2
    assert "--xref 'C-1001=A-7' is not SYSTEM:ENTITY:ID=SYSTEM:ID" in run.err
    assert "crm:customer:C-1001=erp:A-7" in run.err


def test_unknown_mapping_id_suggests_the_nearest(isthmus: RunIsthmus) -> None:
    run = isthmus("preview", "crm_customer_to_canonicl", SAMPLES / "crm_customer.json", "--paths", MAPPINGS)
    run.assert_no_traceback()
    assert run.code == 2
    assert "no mapping with id 'crm_customer_to_canonicl'" in run.err
    assert "did you mean 'crm_customer_to_canonical'" in run.err
