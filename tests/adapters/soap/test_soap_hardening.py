"""SOAP adapter, hostile XML: DTDs and entity bombs refused unexpanded, sizes bounded, imports fenced in."""

from __future__ import annotations

import gzip
import time
from typing import Any

import pytest
import requests
import zeep.exceptions
import zeep.loader
from legacy_erp import NS, LegacyErp
from lxml import etree
from soap_settings import AdapterFactory

from adapters.soap.hardening import has_doctype, zeep_settings
from middleware.adapter import WriteRequest
from middleware.errors import PermanentError

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"

LAUGHS = [b"&lol;" * 10] + [(b"&lol%d;" % i) * 10 for i in range(1, 9)]  # lol1 .. lol9, ten of the one before
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(b' <!ENTITY lol%d "%s">\n' % (i + 1, laugh) for i, laugh in enumerate(LAUGHS))
    + b']>\n<soap:Envelope xmlns:soap="' + SOAP11.encode() + b'"><soap:Body>'
    + b'<tns:CreateCustomerResponse xmlns:tns="' + NS.encode() + b'"><tns:CreateCustomerResult>'
    + b"<tns:customer_id>&lol9;</tns:customer_id></tns:CreateCustomerResult></tns:CreateCustomerResponse>"
    + b"</soap:Body></soap:Envelope>"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b'<soap:Envelope xmlns:soap="' + SOAP11.encode() + b'"><soap:Body>'
    b'<tns:CreateCustomerResponse xmlns:tns="' + NS.encode() + b'"><tns:CreateCustomerResult>'
    b"<tns:customer_id>&xxe;</tns:customer_id></tns:CreateCustomerResult></tns:CreateCustomerResponse>"
    b"</soap:Body></soap:Envelope>"
)


def envelope(inner: bytes) -> bytes:
    return b'<?xml version="1.0"?><soap:Envelope xmlns:soap="' + SOAP11.encode() + b'"><soap:Body>' + inner + (
        b"</soap:Body></soap:Envelope>"
    )


def create(adapter: Any) -> Any:
    (result,) = adapter.writer().write_batch([WriteRequest("customer", {"name": "Acme"}, key="crm:customer:C-1@1")])
    return result


def loaded(adapter: Any) -> Any:
    adapter.client.binding()  # the WSDL is loaded before the answers turn hostile
    return adapter


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion_laughs", "external_entity"])
def test_an_answer_with_a_dtd_is_refused_without_expanding_it(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, bomb: bytes
) -> None:
    adapter = loaded(soap_adapter(legacy_erp))
    legacy_erp.hostile_answer = bomb
    started = time.monotonic()
    result = create(adapter)
    assert time.monotonic() - started < 1.0
    assert result.outcome == "permanent" and result.target_id is None
    assert "declares a DOCTYPE" in result.error and "refused without parsing" in result.error
    assert "may have applied it: check before replaying" in result.error  # the call itself was sent
    assert "lollol" not in result.error and "root:" not in result.error


def test_a_read_answer_with_a_dtd_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    adapter = loaded(soap_adapter(legacy_erp))
    legacy_erp.hostile_answer = EXTERNAL_ENTITY
    with pytest.raises(PermanentError, match="declares a DOCTYPE") as caught:
        list(adapter.reader().read_changes("customer", None))
    assert "root:" not in str(caught.value)


def test_zeep_behind_the_first_guard_refuses_dtds_and_entities_too() -> None:
    refused = (zeep.exceptions.DTDForbidden, zeep.exceptions.EntitiesForbidden, zeep.exceptions.XMLSyntaxError)
    for bomb in (BILLION_LAUGHS, EXTERNAL_ENTITY):
        started = time.monotonic()
        with pytest.raises(refused) as caught:  # libxml2 stops the laughs at its amplification limit
            zeep.loader.parse_xml(bomb, None, settings=zeep_settings(strict=True, forbid_external=True))  # type: ignore[arg-type]
        assert time.monotonic() - started < 1.0 and "root:" not in str(caught.value)


def test_a_too_deeply_nested_answer_is_refused_as_invalid_xml(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    adapter = loaded(soap_adapter(legacy_erp))
    legacy_erp.hostile_answer = envelope(b"<a>" * 5000 + b"</a>" * 5000)  # lxml's limit without huge_tree
    result = create(adapter)
    assert result.outcome == "permanent" and "the answer is not valid XML" in result.error
    assert "may have applied it" in result.error


def test_an_answer_that_does_not_match_the_wsdl_is_permanent(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    adapter = loaded(soap_adapter(legacy_erp))
    legacy_erp.hostile_answer = envelope(
        b'<tns:ListCustomersChangedSinceResponse xmlns:tns="' + NS.encode() + b'">'
        b"<tns:ListCustomersChangedSinceResult><tns:Customer><tns:customer_id>K1</tns:customer_id>"
        b"<tns:credit_limit>lots</tns:credit_limit></tns:Customer></tns:ListCustomersChangedSinceResult>"
        b"</tns:ListCustomersChangedSinceResponse>"
    )
    with pytest.raises(PermanentError, match="ListCustomersChangedSince: the answer does not match the WSDL"):
        list(adapter.reader().read_changes("customer", None))


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "no_length"])
def test_an_oversized_answer_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory, chunked: bool) -> None:
    adapter = loaded(soap_adapter(legacy_erp, max_response_bytes=64 * 1024))
    item = b"<tns:customer_id>" + b"K" * 1000 + b"</tns:customer_id>"
    legacy_erp.hostile_answer = envelope(b'<tns:CreateCustomerResponse xmlns:tns="' + NS.encode() + b'">'
                                         + item * 500 + b"</tns:CreateCustomerResponse>")
    legacy_erp.hostile_chunked = chunked
    result = create(adapter)
    assert result.outcome == "permanent"
    assert "is larger than the limit of 65536 bytes" in result.error


def test_a_compressed_answer_is_limited_by_its_unpacked_size(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    adapter = loaded(soap_adapter(legacy_erp, max_response_bytes=1024 * 1024))
    legacy_erp.hostile_answer = gzip.compress(envelope(b"<x>" + b" " * 64 * 1024 * 1024 + b"</x>"))
    legacy_erp.hostile_headers = {"Content-Encoding": "gzip"}
    assert len(legacy_erp.hostile_answer) < 1024 * 1024
    started = time.monotonic()
    result = create(adapter)
    assert result.outcome == "permanent" and "larger than the limit of 1048576 bytes" in result.error
    assert time.monotonic() - started < 2


def test_an_oversized_read_answer_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    from datetime import UTC, datetime

    for i in range(300):
        legacy_erp.put_customer(f"K{i}", "N" * 200, datetime(2026, 1, 1, tzinfo=UTC))
    adapter = soap_adapter(legacy_erp, max_response_bytes=32 * 1024)
    with pytest.raises(PermanentError, match="larger than the limit of 32768 bytes"):
        list(adapter.reader().read_changes("customer", None))


@pytest.mark.parametrize(
    "text",
    [
        "<!DOCTYPE x><x/>",
        '<?xml version="1.0"?>\n<!-- a comment --><?pi x?>\n  <!doctype x [<!ENTITY a "b">]><x/>',
        "\ufeff<!DOCTYPE x><x/>",
    ],
)
def test_a_doctype_is_found_behind_declarations_comments_and_a_bom(text: str) -> None:
    assert has_doctype(text.encode("utf-8"))
    assert has_doctype(text.encode("utf-16"))


@pytest.mark.parametrize(
    "text", ["<x/>", '<?xml version="1.0"?><x><![CDATA[<!DOCTYPE not a prolog>]]></x>', "<!-- <!DOCTYPE x> --><x/>"]
)
def test_text_that_merely_mentions_a_doctype_is_not_refused(text: str) -> None:
    assert not has_doctype(text.encode())


# ----- hostile WSDLs ------------------------------------------------------------------------


def spyne_wsdl(erp: LegacyErp) -> bytes:
    return requests.get(erp.wsdl_url, timeout=5).content


def with_schema_import(wsdl: bytes, location: str) -> bytes:
    """The WSDL with its schema moved out and imported from `location` (and the schema text)."""
    root = etree.fromstring(wsdl)
    types = root.find("{http://schemas.xmlsoap.org/wsdl/}types")
    assert types is not None
    schema = types[0]
    types.remove(schema)
    xs = "http://www.w3.org/2001/XMLSchema"
    holder = etree.SubElement(types, f"{{{xs}}}schema")
    etree.SubElement(holder, f"{{{xs}}}import", namespace=NS, schemaLocation=location)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def schema_of(wsdl: bytes) -> bytes:
    root = etree.fromstring(wsdl)
    return etree.tostring(root.find("{http://schemas.xmlsoap.org/wsdl/}types")[0])  # type: ignore[index]


def test_a_wsdl_with_a_dtd_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    wsdl = spyne_wsdl(legacy_erp)
    legacy_erp.documents["/xxe.wsdl"] = wsdl.replace(
        b"?>", b'?>\n<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', 1
    )
    adapter = soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/xxe.wsdl")
    check = adapter.check()
    assert check.reachable and check.authenticated is None and check.detail.startswith("WSDL not loaded")
    assert "declares a DOCTYPE" in check.detail and "root:" not in check.detail
    assert create(adapter).outcome == "permanent"


def test_a_wsdl_importing_a_local_file_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    legacy_erp.documents["/evil.wsdl"] = with_schema_import(spyne_wsdl(legacy_erp), "file:///etc/passwd")
    adapter = soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/evil.wsdl")
    result = create(adapter)
    assert result.outcome == "permanent"
    assert "imports 'file:///etc/passwd', which the import policy 'same_origin' does not allow" in result.error


def test_a_wsdl_may_import_from_its_own_origin_only(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    wsdl = spyne_wsdl(legacy_erp)
    legacy_erp.documents["/types.xsd"] = schema_of(wsdl)
    legacy_erp.documents["/split.wsdl"] = with_schema_import(wsdl, "types.xsd")
    legacy_erp.documents["/foreign.wsdl"] = with_schema_import(wsdl, "http://127.0.0.9:9/types.xsd")
    assert create(soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/split.wsdl")).outcome == "ok"
    refused = create(soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/foreign.wsdl"))
    assert refused.outcome == "permanent" and "'http://127.0.0.9:9/types.xsd'" in refused.error
    none = create(soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/split.wsdl", wsdl_imports="none"))
    assert none.outcome == "permanent" and "import" in none.error
    # a same-origin import may not redirect elsewhere
    legacy_erp.redirects["/moved.xsd"] = "http://127.0.0.9:9/types.xsd"
    legacy_erp.documents["/moving.wsdl"] = with_schema_import(wsdl, "moved.xsd")
    moved = create(soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/moving.wsdl"))
    assert moved.outcome == "permanent" and "redirected to http://127.0.0.9:9/types.xsd" in moved.error


def test_a_file_wsdl_may_import_files_beside_it(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory, tmp_path: Any
) -> None:
    wsdl = spyne_wsdl(legacy_erp)
    (tmp_path / "types.xsd").write_bytes(schema_of(wsdl))
    (tmp_path / "erp.wsdl").write_bytes(with_schema_import(wsdl, "types.xsd"))
    (tmp_path / "outside.wsdl").write_bytes(with_schema_import(wsdl, "../types.xsd"))
    (tmp_path.parent / "types.xsd").write_bytes(schema_of(wsdl))
    assert create(soap_adapter(legacy_erp, wsdl=str(tmp_path / "erp.wsdl"))).outcome == "ok"
    outside = create(soap_adapter(legacy_erp, wsdl=str(tmp_path / "outside.wsdl")))
    assert outside.outcome == "permanent" and "import policy" in outside.error


def test_a_wsdl_that_points_calls_at_a_local_file_is_refused(
    legacy_erp: LegacyErp, soap_adapter: AdapterFactory
) -> None:
    wsdl = spyne_wsdl(legacy_erp)
    legacy_erp.documents["/local.wsdl"] = wsdl.replace(f'location="{legacy_erp.url}/"'.encode(),
                                                       b'location="file:///etc/passwd"')
    assert b"file:///etc/passwd" in legacy_erp.documents["/local.wsdl"]
    result = create(soap_adapter(legacy_erp, wsdl=f"{legacy_erp.url}/local.wsdl"))
    assert result.outcome == "permanent" and "only http:// and https://" in result.error
    assert "root:" not in result.error


def test_an_oversized_wsdl_is_refused(legacy_erp: LegacyErp, soap_adapter: AdapterFactory) -> None:
    result = create(soap_adapter(legacy_erp, max_wsdl_bytes=2048))
    assert result.outcome == "permanent" and "larger than the limit of 2048 bytes" in result.error
