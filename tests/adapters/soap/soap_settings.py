"""Settings of the SOAP adapter tests: a system config for the sample legacy ERP, piece by piece."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from legacy_erp import LegacyErp

from adapters.soap import SoapAdapter

PASSWORD = "soap-pass-1234"
WSSE = {"type": "ws_security", "username": "isthmus", "password": PASSWORD}

CUSTOMER_READ = {
    "operation": "ListCustomersChangedSince",
    "since_argument": "since",
    "id_field": "customer_id",
    "version_field": "version",
    "updated_field": "updated_at",
}
CUSTOMER_WRITE = {
    "create": {"operation": "CreateCustomer", "record_argument": "customer", "id_path": "customer_id"},
    "update": {
        "operation": "UpdateCustomer",
        "record_argument": "customer",
        "target_id_argument": "customer_id",
        "id_path": "customer_id",
    },
}
ORDER_WRITE = {"create": {"operation": "CreateOrder", "record_argument": "order", "id_path": ""}}
STOCK_READ = {"operation": "GetStock", "arguments": {"sku": "SKU-1"}, "id_field": "sku", "updated_field": "updated_at"}

AdapterFactory = Callable[..., SoapAdapter]


def soap_config(erp: LegacyErp, **overrides: Any) -> dict[str, Any]:
    """A system config for the sample ERP: customers read and written, orders written, stock read."""
    config: dict[str, Any] = {
        "wsdl": erp.wsdl_url,
        "timeout_s": 2,
        "auth": WSSE,
        "entities": {
            "customer": {"read": CUSTOMER_READ, "write": CUSTOMER_WRITE},
            "order": {"write": ORDER_WRITE},
            "stock": {"read": STOCK_READ},
        },
    }
    config.update(overrides)
    return config
