"""REST adapter, request budget: one budget per system, shared by its reader and writer.

Against a real loopback server that counts what reaches it: a spent daily budget means the
request is never sent, reads fail as transient and writes come back transient, both with a
retry after 00:00 UTC. The token bucket is timed with an injected clock where exactness
matters and with the real clock where sharing matters.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from http_stub import Answer, Seen
from prometheus_client import REGISTRY
from pydantic import ValidationError

from adapters.rest import RestAdapter, RestSystemConfig
from adapters.rest.budget import DAY_S, BudgetExhausted, RequestBudget
from adapters.rest.config import RequestBudgetConfig
from middleware.adapter import WriteRequest
from middleware.errors import TransientError


def api(seen: Seen) -> Answer:
    if seen.method == "GET":
        return Answer(body={"items": [{"id": 1, "updated": "2026-01-01T00:00:00+00:00"}]})
    return Answer(201, {"id": "W-1"})


def adapter_for(url: str, system: str, budget: dict[str, Any], concurrency: int = 1) -> RestAdapter:
    read = {"path": "/items", "records_path": "items", "id_field": "id", "updated_field": "updated"}
    write = {"mode": "upsert", "method": "POST", "path": "/items", "id_path": "id"}
    return RestAdapter(
        system,
        {
            "base_url": url,
            "timeout_s": 2,
            "concurrency": concurrency,
            "request_budget": budget,
            "entities": {"item": {"read": read, "write": write}},
        },
    )


def read(adapter: RestAdapter) -> None:
    list(adapter.reader().read_changes("item", None))


def write(adapter: RestAdapter, n: int = 1) -> list[Any]:
    batch = [WriteRequest("item", {"n": i}, key=f"s:item:{i}@1") for i in range(n)]
    return adapter.writer().write_batch(batch)


def remaining(system: str, window: str) -> float | None:
    return REGISTRY.get_sample_value("isthmus_request_budget_remaining", {"system": system, "window": window})


def test_the_daily_budget_is_shared_by_reader_and_writer_and_refuses_once_spent(stub_server) -> None:
    server = stub_server(api)
    adapter = adapter_for(server.url, "budget_shared", {"per_day": 5})
    assert remaining("budget_shared", "day") == 5
    read(adapter)
    assert [r.outcome for r in write(adapter, 3)] == ["ok"] * 3
    read(adapter)
    assert len(server.seen) == 5 and remaining("budget_shared", "day") == 0

    (refused,) = write(adapter)
    assert refused.outcome == "transient" and "request budget" in refused.error and "00:00 UTC" in refused.error
    assert refused.retry_after is not None and 0 < refused.retry_after <= DAY_S
    with pytest.raises(TransientError, match="request budget of system 'budget_shared' is spent") as caught:
        read(adapter)
    assert isinstance(caught.value, BudgetExhausted) and caught.value.retry_after == pytest.approx(
        refused.retry_after, abs=5
    )
    assert len(server.seen) == 5  # nothing was sent once the budget was spent
    adapter.close()


def test_two_adapters_of_different_systems_do_not_share_a_budget(stub_server) -> None:
    server = stub_server(api)
    crm = adapter_for(server.url, "budget_crm", {"per_day": 1})
    erp = adapter_for(server.url, "budget_erp", {"per_day": 1})
    read(crm)
    read(erp)
    with pytest.raises(BudgetExhausted):
        read(crm)


def test_the_per_second_bucket_paces_reader_and_writer_together(stub_server) -> None:
    server = stub_server(api)
    adapter = adapter_for(server.url, "budget_pace", {"per_second": 20, "burst": 2}, concurrency=4)
    started = time.monotonic()
    reader = threading.Thread(target=lambda: [read(adapter) for _ in range(4)])
    reader.start()
    write(adapter, 6)
    reader.join()
    elapsed = time.monotonic() - started
    assert len(server.seen) == 10
    assert elapsed >= (10 - 2) / 20 * 0.9  # 2 at once, then 20 per second, shared by both
    adapter.close()


def test_token_bucket_waits_for_its_tokens_and_refills_with_time() -> None:
    now = [100.0]
    slept: list[float] = []
    budget = RequestBudget(
        "bucket_unit",
        RequestBudgetConfig(per_second=2, burst=1),
        clock=lambda: now[0],
        sleep=slept.append,
    )
    budget.acquire()
    budget.acquire()
    budget.acquire()
    assert slept == [0.5, 1.0]  # each caller waits for its own token
    now[0] += 10
    assert budget.remaining("second") == 1.0  # full again, never above burst
    budget.acquire()
    assert slept == [0.5, 1.0]


def test_the_daily_count_starts_again_at_midnight_utc() -> None:
    wall = [DAY_S * 20_000 + 86_000.0]  # 23:53:20 UTC
    budget = RequestBudget("day_unit", RequestBudgetConfig(per_day=2), wall=lambda: wall[0])
    budget.acquire()
    budget.acquire()
    with pytest.raises(BudgetExhausted) as caught:
        budget.acquire()
    assert caught.value.retry_after == pytest.approx(400)
    wall[0] += 400
    budget.acquire()
    assert budget.remaining("day") == 1


def test_budget_config_needs_a_limit() -> None:
    with pytest.raises(ValidationError, match="per_second, per_day or both"):
        RestSystemConfig.model_validate({"base_url": "http://x", "request_budget": {}})
    with pytest.raises(ValidationError, match="burst needs per_second"):
        RestSystemConfig.model_validate({"base_url": "http://x", "request_budget": {"per_day": 5, "burst": 3}})
