"""`isthmus check`: the dry run before going live, run as a user runs it, against the demo's sample systems.

The demo config (deploy/demo/isthmus.yaml) points at a SAMPLE CRM that wants a bearer token
and a SAMPLE ERP; both run here on loopback. The check must pass with the right token,
fail with exit 1 and say why with a wrong one, and move no data either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from tests.cli.cli_runner import DEMO_CONFIG, RunIsthmus

TOKEN = "crm-check-token-42"


@pytest.fixture
def samples(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SampleCrm, SampleErp]]:
    crm = SampleCrm(token=TOKEN).start()
    erp = SampleErp(advance_every_s=0).start()
    crm.seed(customers=3, orders_per_customer=1, with_bad_records=False)
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("DEMO_ERP_URL", erp.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", TOKEN)
    try:
        yield crm, erp
    finally:
        crm.stop()
        erp.stop()


def test_check_passes_when_every_system_is_reachable_and_authenticated(isthmus: RunIsthmus, samples) -> None:
    crm, erp = samples
    before = (crm.state(), erp.state())
    run = isthmus("check", "--config", DEMO_CONFIG)
    run.assert_no_traceback()
    assert run.code == 0, run.output
    assert "crm (rest): ok" in run.out and "erp (rest): ok" in run.out
    assert "read customer: allowed" in run.out and "(needed by source crm_customers)" in run.out
    assert "write account: not verified" in run.out  # check never writes to find out
    assert "all 2 systems reachable and authenticated" in run.out
    assert (crm.state(), erp.state()) == before  # no data moved


def test_check_with_a_wrong_token_fails_with_exit_1_and_names_the_system(
    isthmus: RunIsthmus, samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_CRM_TOKEN", "not-the-token")
    run = isthmus("check", "--config", DEMO_CONFIG)
    run.assert_no_traceback()
    assert run.code == 1, run.output
    assert "crm (rest): FAILED" in run.out and "credentials refused" in run.out
    assert "erp (rest): ok" in run.out
    assert "1 of 2 systems failed the check: crm" in run.out
    assert "not-the-token" not in run.output


def test_check_json_reports_each_system_and_the_permissions_routes_need(isthmus: RunIsthmus, samples) -> None:
    run = isthmus("check", "--config", DEMO_CONFIG, "--json")
    assert run.code == 0, run.output
    report = json.loads(run.out)
    assert report["ok"] is True
    systems = {s["system"]: s for s in report["systems"]}
    assert set(systems) == {"crm", "erp"}
    assert systems["crm"]["reachable"] and systems["crm"]["authenticated"]
    needs = {(p["access"], p["entity"]): p for p in systems["erp"]["permissions"]}
    assert needs[("read", "order_status")]["ok"] is True
    assert needs[("write", "sales_order")]["used_by"] == ["route orders_crm_to_erp"]


def test_check_of_an_unreachable_system_fails(isthmus: RunIsthmus, samples, monkeypatch: pytest.MonkeyPatch) -> None:
    crm, _erp = samples
    crm.stop()
    run = isthmus("check", "--config", DEMO_CONFIG, "--json")
    assert run.code == 1
    crm_report = next(s for s in json.loads(run.out)["systems"] if s["system"] == "crm")
    assert crm_report["reachable"] is False and "not reachable" in crm_report["problems"]
