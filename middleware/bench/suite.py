"""`isthmus bench`: throughput figures, printed, never asserted.

* `mapping_records_per_s`: a 20-field order mapping with 5 nested lines, compiled once,
  applied in a loop on one core (the per-message cost of the mapping engine alone).
* `embedded_e2e_events_per_s`: durable, end to end: envelopes published to the embedded
  broker in batches while a worker consumes them, maps them through the demo's customer
  chain and writes them over HTTP into the sample ERP, running as a separate process so
  that it does not share this process's GIL. Counted from the first publish to the last
  acked effect.
* `rabbitmq_*`, `p50/p99_latency_ms_at_1000`, `webhook_ingest_events_per_s`,
  `worker_rss_growth_pct`: on a real RabbitMQ (`middleware.bench.rabbitmq`,
  `middleware.bench.webhook`); skipped, with the reason on stderr, when none answers.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from middleware.bench.configs import ACCOUNT_WRITES, bench_config, customer_route, write_config
from middleware.bench.harness import REPO, publish_in_background, sample_erp_process
from middleware.bench.workload import bench_envelopes

ORDER_MAPPING = """\
mapping: bench_order
source: crm.order
target: SalesOrder
fields:
  order_id: order_no
  order_number: {from: order_no, transform: "trim | upper"}
  customer_id: {from: customer_no, transform: "prefix('CRM-')"}
  order_date: {from: placed_at, transform: "datetime | to_tz(UTC) | date"}
  currency: {from: currency, transform: upper}
  status: {from: stage, values: {won: confirmed, open: draft, lost: cancelled}}
  requested_delivery_date: {from: wish_date, transform: date}
  shipping_address.street: ship.street
  shipping_address.postal_code: ship.zip
  shipping_address.city: {from: ship.city, transform: trim}
  shipping_address.country: {from: ship.country, transform: upper}
  shipping_address.kind: {const: shipping}
  total_net: {from: net, transform: "decimal(2)"}
  total_tax: {from: tax, transform: "decimal(2)"}
  total_gross: {from: gross, transform: "decimal(2)"}
  notes: {from: note, transform: trim, default: ""}
  updated_at: {from: updated_at, transform: "datetime | to_tz(UTC)"}
  lines:
    each: lines
    fields:
      line_number: {index: 1}
      sku: {from: sku, transform: upper}
      description: {from: desc, transform: trim}
      quantity: {from: qty, transform: "decimal(3)"}
      unit: {const: unit}
      unit_price: {from: price, transform: "decimal(2)"}
      discount_pct: {from: discount, transform: "decimal(2)", default: "0"}
"""


def sample_order(i: int) -> dict[str, Any]:
    return {
        "order_no": f" so-{i} ",
        "customer_no": f"C-{i % 997}",
        "placed_at": "2026-11-24T09:15:00+08:00",
        "currency": "eur",
        "stage": "won",
        "wish_date": "2026-12-01",
        "ship": {"street": "Hauptstr. 1", "zip": "10115", "city": " Berlin ", "country": "de"},
        "net": "100.00",
        "tax": "19.00",
        "gross": "119.00",
        "note": "  call before delivery ",
        "updated_at": "2026-11-24T09:16:00+08:00",
        "lines": [
            {"sku": f"sku-{j}", "desc": f" item {j} ", "qty": "2", "price": "10.00", "discount": "5"} for j in range(5)
        ],
    }


def _handwritten_order(record: dict[str, Any]) -> dict[str, Any]:
    """ORDER_MAPPING written by hand in plain Python: the ceiling the engine is measured against."""
    from decimal import ROUND_HALF_UP, Decimal

    cents, mills = Decimal("0.01"), Decimal("0.001")
    ship = record["ship"]
    return {
        "order_id": record["order_no"],
        "order_number": record["order_no"].strip().upper(),
        "customer_id": "CRM-" + record["customer_no"],
        "order_date": datetime.fromisoformat(record["placed_at"]).astimezone(UTC).date(),
        "currency": record["currency"].upper(),
        "status": {"won": "confirmed", "open": "draft", "lost": "cancelled"}[record["stage"]],
        "requested_delivery_date": datetime.fromisoformat(record["wish_date"]).date(),
        "shipping_address": {
            "street": ship["street"],
            "postal_code": ship["zip"],
            "city": ship["city"].strip(),
            "country": ship["country"].upper(),
            "kind": "shipping",
        },
        "total_net": Decimal(record["net"]).quantize(cents, ROUND_HALF_UP),
        "total_tax": Decimal(record["tax"]).quantize(cents, ROUND_HALF_UP),
        "total_gross": Decimal(record["gross"]).quantize(cents, ROUND_HALF_UP),
        "notes": record["note"].strip() or "",
        "updated_at": datetime.fromisoformat(record["updated_at"]).astimezone(UTC),
        "lines": [
            {
                "line_number": n,
                "sku": line["sku"].upper(),
                "description": line["desc"].strip(),
                "quantity": Decimal(line["qty"]).quantize(mills, ROUND_HALF_UP),
                "unit": "unit",
                "unit_price": Decimal(line["price"]).quantize(cents, ROUND_HALF_UP),
                "discount_pct": Decimal(line["discount"]).quantize(cents, ROUND_HALF_UP),
            }
            for n, line in enumerate(record["lines"], 1)
        ],
    }


def _rate(fn: Any, records: list[dict[str, Any]], seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for record in records:
            fn(record)
        count += len(records)
    return count / (time.perf_counter() - started)


def bench_mapping(seconds: float) -> dict[str, float]:
    """Engine vs the same mapping written by hand, interleaved so both see the same noise."""
    from middleware.mapping import compile_mapping_text

    mapping = compile_mapping_text(ORDER_MAPPING)
    records = [sample_order(i) for i in range(1000)]
    assert mapping.apply(records[0]) is not None
    engine_rates, hand_rates = [], []
    for _ in range(3):
        engine_rates.append(_rate(lambda r: mapping.apply(r, None), records, seconds / 3))
        hand_rates.append(_rate(_handwritten_order, records, seconds / 3))
    engine, hand = max(engine_rates), max(hand_rates)
    validated = _rate(lambda r: mapping.apply_validated(r, None), records[:200], seconds / 2)
    return {
        "mapping_records_per_s": round(engine),
        "mapping_handwritten_python_records_per_s": round(hand),
        "mapping_engine_vs_handwritten": round(engine / hand, 2),
        "mapping_validated_records_per_s": round(validated),
    }


def _erp_accounts(port: int) -> int:
    import requests

    reply = requests.get(f"http://127.0.0.1:{port}/admin/state", params={"effects": "0"}, timeout=5)
    return int(reply.json()["accounts"])


def bench_embedded_e2e(events: int, processes: int = 0) -> dict[str, Any]:
    """Events/s from the first publish to the last effect in the sample ERP.

    `processes=0` runs one worker inside this process (its stats give the lag figures);
    `processes=N` starts N `isthmus worker --no-sources` processes on the same embedded
    broker file — the scale-out an operator would use — and counts effects in the ERP.
    """
    from middleware.broker import open_broker
    from middleware.config import load_config
    from middleware.runtime.worker import Worker

    workers: list[subprocess.Popen[bytes]] = []
    label = "embedded_e2e" if processes == 0 else f"embedded_e2e_{processes}proc"
    with sample_erp_process() as port:
        try:
            with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
                erp = {
                    "type": "rest",
                    "base_url": f"http://127.0.0.1:{port}",
                    "concurrency": 8,
                    "max_connections": 32,
                    "entities": {"account": ACCOUNT_WRITES},
                }
                customers = customer_route("bench_customers", "erp", "account", "canonical_customer_to_erp", 200)
                config_path = write_config(
                    Path(tmp) / "isthmus.yaml",
                    bench_config("embedded://broker.db", "sqlite://state.db", {"erp": erp}, [customers]),
                )
                config = load_config(config_path)
                messages = bench_envelopes(events, "B")
                worker: Worker | None = None
                if processes == 0:
                    worker = Worker(config, run_sources=False, serve_health=False).start()
                else:
                    setup = open_broker(config.model.broker, base_dir=config.base_dir)
                    for route in config.model.routes:
                        setup.setup_route(route.name, route.on)
                    setup.close()
                    for _ in range(processes):
                        workers.append(
                            subprocess.Popen(
                                [
                                    sys.executable,
                                    "-m",
                                    "middleware.cli.main",
                                    "worker",
                                    "--config",
                                    str(config_path),
                                    "--no-sources",
                                ],
                                cwd=REPO,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                        )
                    time.sleep(2.0)  # let them import and connect before the clock starts
                publisher = open_broker(config.model.broker, base_dir=config.base_dir)
                started = time.perf_counter()

                thread = publish_in_background(publisher, messages)
                deadline = time.monotonic() + 600
                done = 0
                while done < events and time.monotonic() < deadline:
                    time.sleep(0.02 if worker else 0.2)
                    if worker is not None:
                        stats = worker.stats["bench_customers"]
                        done = stats.applied + stats.dead_lettered
                    else:
                        done = _erp_accounts(port)
                elapsed = time.perf_counter() - started
                thread.join()
                publisher.close()
                results: dict[str, Any] = {f"{label}_events_per_s": round(done / elapsed), f"{label}_events": events}
                if worker is not None:
                    worker.stop()
                    stats = worker.stats["bench_customers"]
                    lags = sorted(stats.lags)
                    results[f"{label}_dead_lettered"] = stats.dead_lettered
                    if lags:
                        results[f"{label}_p50_lag_ms"] = round(1000 * lags[len(lags) // 2], 1)
                        results[f"{label}_p99_lag_ms"] = round(1000 * lags[int(len(lags) * 0.99)], 1)
                return results
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(30)


def bench_embedded_broker(messages: int) -> dict[str, Any]:
    """The embedded broker alone: durable publishes and fetch+ack, in batches of 100."""
    from middleware.broker import open_broker
    from middleware.broker.base import OutgoingMessage

    with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
        broker = open_broker(f"embedded:///{tmp}/broker.db")
        broker.setup_route("bench", ["#"])
        batch = [OutgoingMessage("customer.upserted", b"x" * 500) for _ in range(100)]
        started = time.perf_counter()
        for _ in range(messages // 100):
            broker.publish(batch)
        published = time.perf_counter() - started
        started = time.perf_counter()
        taken = 0
        while taken < messages:
            deliveries = broker.fetch("bench", 100, 1.0)
            broker.ack(deliveries)
            taken += len(deliveries)
        consumed = time.perf_counter() - started
        broker.close()
    return {
        "embedded_broker_publish_per_s": round(messages / published),
        "embedded_broker_fetch_ack_per_s": round(messages / consumed),
    }


def bench_rest_writes(writes: int) -> dict[str, Any]:
    """Writes into the sample ERP, 8 at a time: the REST writer vs `requests.Session.request`.

    The second figure is why the writer drives the session's urllib3 pool directly.
    """
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from adapters.rest import RestAdapter, RestSystemConfig
    from middleware.adapter import WriteRequest

    with sample_erp_process() as port:
        url = f"http://127.0.0.1:{port}"
        settings = {"base_url": url, "concurrency": 8, "entities": {"account": ACCOUNT_WRITES}}
        config = RestSystemConfig.model_validate(settings)
        adapter = RestAdapter("erp", config)
        writer = adapter.writer()
        requests_ = [
            WriteRequest(entity="account", record={"account_name": f"W{i}"}, key=f"bench:w:{i}@1")
            for i in range(writes)
        ]
        started = time.perf_counter()
        for i in range(0, writes, 200):
            writer.write_batch(requests_[i : i + 200])
        writer_rate = writes / (time.perf_counter() - started)
        adapter.close()

        session = requests.Session()
        session.trust_env = False
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8, max_retries=0))

        def post(i: int) -> None:
            session.post(
                f"{url}/api/accounts",
                json={"account_name": f"S{i}"},
                headers={"Idempotency-Key": f"bench:s:{i}@1"},
                timeout=10,
            ).raise_for_status()

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(writes)))
        session_rate = writes / (time.perf_counter() - started)
        session.close()
        return {
            "rest_writer_writes_per_s": round(writer_rate),
            "requests_session_writes_per_s": round(session_rate),
        }
