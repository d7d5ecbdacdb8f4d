"""Logs operators can read and share: JSON off a terminal, ids on every message line,
no secret and no configured personal data in any line.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.observability import configure_logging
from middleware.observability.logmask import MASK, LogMasker, register_secret
from middleware.runtime.worker import Worker
from tests.adapters.http_stub import Answer, Seen, StubServer
from tests.e2e.harness import wait_until
from tests.observability.conftest import CRM_TOKEN, WEBHOOK_SECRET
from tests.observability.worker_config import HEALTHY_ROUTE, customer_event, post_webhook, write_observed_config

ERP_USER = "isthmus-sync"
ERP_PASSWORD = "erp-pass-4c7d19ab"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_masker_masks_pii_keys_at_any_depth_and_keeps_the_rest() -> None:
    masker = LogMasker(["email", "phone", "name", "vat_number"])
    event = masker(
        None,
        "info",
        {
            "event": "message_dead_lettered",
            "route": "customers_crm_to_erp",
            "message_id": "6f1c",
            "email": "jane@acme.example",
            "record": {"name": "Jane Roe", "lines": [{"phone": "030 1234"}], "tier": "gold"},
        },
    )
    assert event["email"] == MASK
    assert event["record"] == {"name": MASK, "lines": [{"phone": MASK}], "tier": "gold"}
    assert (event["route"], event["message_id"]) == ("customers_crm_to_erp", "6f1c")


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (
            'POST /api/accounts → 422: {"error": "rejected", "account_name": "Acme \\"Blue\\" GmbH", '
            '"vat_number": "DE811907980", "blocked": false}',
            ['"error": "rejected"', '"blocked": false', "POST /api/accounts → 422"],
            ["Acme", "DE811907980"],
        ),
        ("{'name': 'Jane Roe', 'tier': 'gold'}", ["'tier': 'gold'"], ["Jane Roe"]),
        ("GET /api/people?email=joe@x.example&name=Joe&page=2", ["page=2"], ["joe@x.example", "Joe&"]),
        ("reply mentioned sales7@globex.example and +49 30 5550100", ["reply mentioned"], ["globex", "5550100"]),
        ("Customer.name: expected str; key crm:customer:C-1001@3", ["Customer.name: expected str", "C-1001@3"], []),
        ("amqp://isthmus:hunter2@rabbit:5672/%2F down", ["amqp://isthmus:***@rabbit:5672"], ["hunter2"]),
        ("changed 2026-11-24T10:00:00+08:00, order SO-5001", ["2026-11-24T10:00:00+08:00", "SO-5001"], []),
    ],
)
def test_masker_masks_pii_and_credentials_inside_free_text(text: str, kept: list[str], gone: list[str]) -> None:
    masked = LogMasker(["email", "name", "account_name", "vat_number"]).mask_text(text)
    for part in kept:
        assert part in masked
    for part in gone:
        assert part not in masked


def test_registered_secret_is_masked_in_every_logged_string() -> None:
    register_secret("s3cret-registered-token")
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    structlog.get_logger("t").error(
        "write_failed", error="401: token s3cret-registered-token refused", nested={"a": ["s3cret-registered-token"]}
    )
    assert "s3cret-registered-token" not in stream.getvalue()
    assert json.loads(stream.getvalue())["error"] == f"401: token {MASK} refused"


def test_logs_are_json_off_a_terminal_and_readable_on_one() -> None:
    piped, tty = io.StringIO(), _Tty()
    configure_logging("auto", "info", piped)
    structlog.get_logger("t").info("message_applied", route="r1", message_id="m1", correlation_id="c1")
    configure_logging("auto", "info", tty)
    structlog.get_logger("t").info("message_applied", route="r1", message_id="m1", correlation_id="c1")
    line = json.loads(piped.getvalue())
    assert (line["event"], line["route"], line["message_id"], line["correlation_id"]) == (
        "message_applied",
        "r1",
        "m1",
        "c1",
    )
    readable = tty.getvalue()
    assert "message_applied" in readable and "route" in readable
    with pytest.raises(ValueError):
        json.loads(readable)


@pytest.fixture
def refusing_erp(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubServer]:
    """An ERP that echoes each request (credentials, record) in its error: first 500, then 422."""
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def respond(seen: Seen) -> Answer:
        key = seen.headers.get("idempotency-key", "")
        with lock:
            attempts[key] = attempts.get(key, 0) + 1
            first = attempts[key] == 1
        echo = {"error": "rejected", "authorization": seen.headers.get("authorization"), "request": seen.json()}
        return Answer(500 if first else 422, echo)

    server = StubServer(respond)
    monkeypatch.setenv("DEMO_ERP_URL", server.url)
    monkeypatch.setenv("TEST_ERP_PASSWORD", ERP_PASSWORD)
    yield server
    server.stop()


@pytest.mark.slow
def test_no_secret_or_personal_data_reaches_the_logs_and_message_lines_carry_ids(
    sample_crm: SampleCrm, refusing_erp: StubServer, tmp_path: Path
) -> None:
    path = write_observed_config(
        tmp_path,
        failing_route=False,
        log_level="debug",
        erp_auth={"type": "basic", "username": ERP_USER, "password": "${TEST_ERP_PASSWORD}"},
    )
    config = load_config(path)
    sample_crm.seed(customers=4, orders_per_customer=0, with_bad_records=False)
    log_path = tmp_path / "worker.log"
    with log_path.open("w", encoding="utf-8") as log:
        worker = Worker(config, log_stream=log, serve_health=False).start()
        try:
            assert worker.webhook is not None
            hook = [customer_event("H-1", company="Hook Person Ltd", email="hook.person@private.example")]
            assert post_webhook(worker.webhook.url, "guessed-secret", hook) == 401
            assert post_webhook(worker.webhook.url, WEBHOOK_SECRET, hook, correlation_id="corr-hook-7") == 202
            wait_until(lambda: worker.stats[HEALTHY_ROUTE].dead_lettered == 5, 30, "five dead letters")
        finally:
            worker.stop()
    text = log_path.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]

    secrets = [
        CRM_TOKEN,
        ERP_PASSWORD,
        WEBHOOK_SECRET,
        base64.b64encode(f"{ERP_USER}:{ERP_PASSWORD}".encode()).decode(),
    ]
    for secret in secrets:
        assert secret not in text, f"a secret reached the logs: {secret[:4]}…"
    assert refusing_erp.seen and all("authorization" in s.headers for s in refusing_erp.seen)

    with sample_crm.lock:
        customers: list[dict[str, Any]] = list(sample_crm.customers.rows.values())
    personal = [c[field] for c in customers for field in ("company", "email", "phone", "vat")]
    personal += ["Hook Person Ltd", "hook.person@private.example", "+49 30 5550100", "DE811907980"]
    for value in personal:
        assert value not in text, f"personal data reached the logs: {value!r}"

    retried = [line for line in lines if line["event"] == "message_retry_scheduled"]
    dead = [line for line in lines if line["event"] == "message_dead_lettered"]
    assert len(retried) == 5 and len(dead) == 5
    for line in dead:  # the echo reached the log line, masked
        assert '"authorization": "***"' in line["error"] and '"account_name": "***"' in line["error"], line["error"]
        assert '"email": "***"' in line["error"] and '"phone": "***"' in line["error"], line["error"]
    for line in lines:
        if "message_id" in line:
            assert line.get("route") and line.get("correlation_id"), line
    assert any(line.get("correlation_id") == "corr-hook-7" for line in dead)
    accepted = [line for line in lines if line["event"] == "webhook_event_accepted"]
    assert accepted and accepted[0]["correlation_id"] == "corr-hook-7" and len(accepted[0]["message_ids"]) == 1
