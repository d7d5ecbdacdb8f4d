"""The isthmus.yaml the observability tests run: the demo's CRM → ERP customer sync, plus
a route into an ERP that is down (every write fails) and a signed webhook endpoint.

Secrets are `${ENV}` references as in production; the fixtures in conftest.py set them.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import requests
import yaml

from adapters.webhook import sign
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "deploy" / "demo" / "isthmus.yaml"
HEALTHY_ROUTE = "customers_crm_to_erp"
FAILING_ROUTE = "customers_to_erp_down"
WEBHOOK_PATH = "/webhooks/crm/customers"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_observed_config(
    directory: Path,
    *,
    failing_route: bool = True,
    log_level: str = "info",
    erp_auth: dict[str, Any] | None = None,
) -> Path:
    config = load_yaml_file(DEMO_CONFIG).data
    config["broker"] = f"embedded:///{directory}/broker.db"
    config["store"] = f"sqlite:///{directory}/state.db"
    config["mappings"] = [str(REPO / "mappings")]
    config["observability"] = {"port": 0, "log_format": "json", "log_level": log_level, "depth_sample_interval_s": 0.3}
    if erp_auth is not None:
        config["systems"]["erp"]["auth"] = erp_auth
    # a budget far above what the test sends: the budget gauges exist, nothing waits for them
    config["systems"]["erp"]["request_budget"] = {"per_second": 1000, "per_day": 1_000_000}
    config["sources"] = [
        {
            "name": "crm_customers",
            "system": "crm",
            "entity": "customer",
            "emits": "customer.upserted",
            "poll_interval_s": 0.2,
        }
    ]
    fast_retry = {"max_attempts": 6, "initial_delay_s": 0.05, "max_delay_s": 0.3}
    routes = [dict(r, retry=fast_retry) for r in config["routes"] if r["name"] == HEALTHY_ROUTE]
    if failing_route:
        down = copy.deepcopy(config["systems"]["erp"])
        down["base_url"] = f"http://127.0.0.1:{closed_port()}"
        down["timeout_s"] = 1.0
        config["systems"]["erp_down"] = down
        routes.append(
            {
                "name": FAILING_ROUTE,
                "on": ["customer.upserted"],
                "from_system": "crm",
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_erp"],
                "to": {"system": "erp_down", "entity": "account"},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.05, "max_delay_s": 0.1},
            }
        )
    config["routes"] = routes
    config["webhooks"] = {
        "host": "127.0.0.1",
        "port": 0,
        "endpoints": {
            "crm_customer_events": {
                "path": WEBHOOK_PATH,
                "system": "crm",
                "entity": "customer",
                "message_type": "customer.upserted",
                "id_field": "customer_no",
                "version_field": "version",
                "occurred_field": "updated_at",
                "secret": "${TEST_WEBHOOK_SECRET}",
            }
        },
    }
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def customer_event(number: str, **changes: Any) -> dict[str, Any]:
    event = {
        "customer_no": number,
        "company": f"Hook Customer {number}",
        "email": f"{number.lower()}@hook.example",
        "phone": "+49 30 5550100",
        "vat": "DE811907980",
        "tier": "gold",
        "status": "active",
        "billing": {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "DE"},
        "updated_at": "2026-11-24T10:00:00+08:00",
        "version": 1,
    }
    event.update(changes)
    return event


def post_webhook(base_url: str, secret: str, events: list[dict[str, Any]], correlation_id: str = "") -> int:
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", "X-Isthmus-Signature": sign(secret, body)}
    if correlation_id:
        headers["X-Correlation-Id"] = correlation_id
    return requests.post(base_url + WEBHOOK_PATH, data=body, headers=headers, timeout=10).status_code
