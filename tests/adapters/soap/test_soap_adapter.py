"""SOAP adapter as a whole: check() on the WSDL, the `type: soap` registry entry, config errors, docs."""

from __future__ import annotations

import re
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from legacy_erp import LegacyErp
from pydantic import BaseModel
from soap_settings import CUSTOMER_READ, WSSE, AdapterFactory

from adapters.soap import SoapAdapter, SoapSystemConfig
from adapters.soap import config as soap_config_module
from middleware.adapter import WriteRequest, adapter_types, load_adapter_class
from middleware.config import load_config
from middleware.errors import ConfigError

README = Path(soap_config_module.__file__).with_name("README.md")


def test_check_reports_services_ports_operations_and_the_configured_ones(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    result = soap_adapter(legacy_erp).check()
    assert result.system == "legacy_erp" and result.reachable and result.authenticated is None
    extra = result.extra
    assert (extra["service"], extra["port"]) == ("CustomerService", "LegacyErp")
    assert set(extra["services"]) == {"CustomerService", "InventoryService", "OrderService"}
    operations = extra["services"]["OrderService"]["LegacyErp"]["operations"]
    assert operations == ["CreateCustomer", "CreateOrder", "GetStock", "ListCustomersChangedSince", "UpdateCustomer"]
    assert extra["configured"]["customer.read"] == {
        "operation": "ListCustomersChangedSince",
        "found": True,
        "arguments": ["since", "max_records"],
    }
    assert extra["configured"]["customer.update"]["arguments"] == ["customer_id", "customer"]
    assert extra["problems"] == []
    assert "5 of 5 configured operations found" in result.detail


def test_check_names_missing_operations_and_arguments_with_hints(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    entities = {
        "customer": {"read": {**CUSTOMER_READ, "since_argument": "changed_since"}},
        "order": {"write": {"create": {"operation": "CreateOrders", "record_argument": "order"}}},
    }
    result = soap_adapter(legacy_erp, entities=entities).check()
    assert result.extra["configured"]["order.create"] == {"operation": "CreateOrders", "found": False}
    assert result.extra["problems"] == [
        "customer.read: operation 'ListCustomersChangedSince' takes no argument 'changed_since'; "
        "it takes: since, max_records",
        "order.create: operation 'CreateOrders' is not in port 'LegacyErp'; "
        "did you mean 'CreateOrder' or 'CreateCustomer'?",
    ]
    assert "1 of 2 configured operations found" in result.detail and "problems:" in result.detail


def test_check_call_proves_the_credentials(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    from datetime import UTC, datetime

    legacy_erp.put_stock("PING", "WH-1", Decimal(0), datetime.now(UTC))
    probe = {"operation": "GetStock", "arguments": {"sku": "PING"}}
    good = soap_adapter(legacy_erp, check_call=probe).check()
    assert (good.reachable, good.authenticated) == (True, True) and "GetStock answered" in good.detail
    bad = soap_adapter(legacy_erp, check_call=probe, auth={**WSSE, "password": "not-the-password"}).check()
    assert (bad.reachable, bad.authenticated) == (True, False)
    assert "authentication failed" in bad.detail and "not-the-password" not in bad.detail


def test_check_of_an_unreachable_wsdl_says_so(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    result = soap_adapter(legacy_erp, wsdl="http://127.0.0.1:9/erp?wsdl").check()
    assert result.reachable is False and result.detail.startswith("WSDL not loaded: loading the WSDL")


def test_a_wsdl_file_with_an_endpoint_override(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, tmp_path: Path
) -> None:
    wsdl = requests.get(legacy_erp.wsdl_url, timeout=5).text.replace(legacy_erp.url, "http://erp.invalid:1")
    path = tmp_path / "legacy.wsdl"
    path.write_text(wsdl, encoding="utf-8")
    adapter = soap_adapter(legacy_erp, wsdl=str(path), endpoint=legacy_erp.url + "/", service="OrderService")
    assert adapter.check().extra["endpoint"] == legacy_erp.url + "/"
    (result,) = adapter.writer().write_batch([WriteRequest("customer", {"name": "Acme"}, key="k@1")])
    assert result.outcome == "ok" and result.target_id in legacy_erp.customers


def test_unknown_service_or_port_is_permanent_with_a_hint(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    result = soap_adapter(legacy_erp, service="CustomerServic").check()
    assert "has no service 'CustomerServic'; did you mean 'CustomerService'" in result.detail
    result = soap_adapter(legacy_erp, port="Legacy").check()
    assert "has no port 'Legacy'" in result.detail


def test_type_soap_is_a_registered_adapter() -> None:
    assert adapter_types()["soap"] == "adapters.soap:SoapAdapter"
    assert load_adapter_class("soap") is SoapAdapter


def write_config(tmp_path: Path, system: str) -> Path:
    path = tmp_path / "isthmus.yaml"
    path.write_text(
        "broker: embedded://b.db\nstore: sqlite://s.db\nmappings: []\nsystems:\n  legacy_erp:\n"
        + textwrap.indent(textwrap.dedent(system), "    "),
        encoding="utf-8",
    )
    return path


def test_config_errors_are_located_with_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(
        tmp_path,
        """\
        type: soap
        wsdl: missing/erp.wsdl
        auth: {type: ws_security, username: u, password: in-clear-text}
        endpiont: http://127.0.0.1:8080/erp
        entities:
          customer:
            read: {opration: ListCustomersChangedSince, id_field: id, updated_field: changed}
            write: {update: {operation: UpdateCustomer}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_mappings=False)
    text = str(caught.value)
    assert f"{path}:8:54: systems.legacy_erp.auth.password: secrets must not be written in YAML" in text
    assert f"{path}:7:11: systems.legacy_erp.wsdl: WSDL file 'missing/erp.wsdl' not found" in text
    assert f"{path}:9:5: systems.legacy_erp.endpiont: unknown key 'endpiont'" in text
    assert "did you mean 'endpoint'" in text
    assert f"{path}:12:16: systems.legacy_erp.entities.customer.read.opration: unknown key 'opration'" in text
    assert f"{path}:13:16: systems.legacy_erp.entities.customer.write: write needs 'create'" in text
    assert "in-clear-text" not in text


def test_readme_config_and_mappings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's isthmus.yaml is complete and valid, with its mappings beside the repository's."""
    import shutil

    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (config_text,) = [b for b in blocks if b.startswith("# isthmus.yaml")]
    shutil.copytree(Path(__file__).resolve().parents[3] / "mappings", tmp_path / "mappings")
    for block in blocks:
        if block.startswith("mapping:"):
            name = block.split("\n", 1)[0].partition(":")[2].strip()
            (tmp_path / "mappings" / f"{name}.yaml").write_text(block, encoding="utf-8")
    (tmp_path / "isthmus.yaml").write_text(config_text, encoding="utf-8")
    monkeypatch.setenv("DEMO_CRM_TOKEN", "t0ken-for-the-test")
    monkeypatch.setenv("LEGACY_ERP_PASSWORD", "pw-for-the-test")
    loaded = load_config(tmp_path / "isthmus.yaml")
    type_name, settings = loaded.systems["legacy_erp"]
    assert type_name == "soap" and isinstance(settings, SoapSystemConfig)
    assert settings.auth.password.get_secret_value() == "pw-for-the-test"  # type: ignore[union-attr]


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for candidate in _models_in(field.annotation):
            names |= _fields(candidate, seen)
    return names


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = sorted(name for name in _fields(SoapSystemConfig, set()) if f"`{name}" not in text and name not in text)
    assert missing == []
