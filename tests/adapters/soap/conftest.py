"""Fixtures for the SOAP adapter tests: the sample legacy ERP (spyne, on loopback) and adapters for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from legacy_erp import LegacyErp
from soap_settings import AdapterFactory, soap_config

from adapters.soap import SoapAdapter, SoapSystemConfig


@pytest.fixture
def legacy_erp() -> Iterator[LegacyErp]:
    erp = LegacyErp().start()
    yield erp
    erp.stop()


@pytest.fixture(params=["soap11", "soap12"])
def any_soap_erp(request: pytest.FixtureRequest) -> Iterator[LegacyErp]:
    """The sample ERP speaking SOAP 1.1, then SOAP 1.2 (faults are Client/Server vs Sender/Receiver)."""
    erp = LegacyErp(soap12=request.param == "soap12").start()
    yield erp
    erp.stop()


@pytest.fixture
def soap_adapter() -> Iterator[AdapterFactory]:
    """Builds a SoapAdapter for an ERP (config overrides as keywords) and closes it after the test."""
    made: list[SoapAdapter] = []

    def build(erp: LegacyErp, **overrides: Any) -> SoapAdapter:
        adapter = SoapAdapter("legacy_erp", SoapSystemConfig.model_validate(soap_config(erp, **overrides)))
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        adapter.close()
