"""`isthmus bench`: throughput figures, printed, never asserted.

* `mapping_records_per_s`: a 20-field order mapping with 5 nested lines, compiled once,
  applied in a loop on one core (the per-message cost of the mapping engine alone).
* `embedded_e2e_events_per_s`: durable, end to end: envelopes published to the embedded
  broker in batches while a worker consumes them, maps them through the demo's customer
  chain and writes them over HTTP into the sample ERP, running as a separate process so
  that it does not share this process's GIL. Counted from the first publish to the last
  acked effect.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

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
            {"sku": f"sku-{j}", "desc": f" item {j} ", "qty": "2", "price": "10.00", "discount": "5"}
            for j in range(5)
        ],
    }


def bench_mapping(seconds: float) -> dict[str, float]:
    from middleware.mapping_runtime import compile_mapping_text

    mapping = compile_mapping_text(ORDER_MAPPING)
    records = [sample_order(i) for i in range(1000)]
    apply = mapping.apply
    ctx = None
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for record in records:
            apply(record, ctx)
        count += len(records)
    elapsed = time.perf_counter() - started
    validated = 0
    started_v = time.perf_counter()
    while time.perf_counter() - started_v < seconds / 2:
        for record in records[:200]:
            mapping.apply_validated(record, ctx)
        validated += 200
    elapsed_v = time.perf_counter() - started_v
    return {
        "mapping_records_per_s": round(count / elapsed),
        "mapping_validated_records_per_s": round(validated / elapsed_v),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sample ERP did not start on port {port}")


E2E_CONFIG = """\
broker: embedded://broker.db
store: sqlite://state.db
mappings: [{mappings}]
observability: {{port: 0, log_format: json, log_level: warning}}
systems:
  erp:
    type: rest
    base_url: {erp_url}
    concurrency: 16
    max_connections: 32
    entities:
      account:
        write:
          mode: create_or_update
          create: {{method: POST, path: /api/accounts}}
          update: {{method: PUT, path: "/api/accounts/{{target_id}}"}}
          id_path: id
routes:
  - name: bench_customers
    on: [customer.upserted]
    mappings: [crm_customer_to_canonical, canonical_customer_to_erp]
    to: {{system: erp, entity: account}}
    batch_size: 200
"""


def bench_embedded_e2e(events: int) -> dict[str, float]:
    from middleware.broker.base import OutgoingMessage
    from middleware.config import load_config
    from middleware.message import Envelope, Source
    from middleware.worker import Worker

    port = _free_port()
    erp = subprocess.Popen(
        [sys.executable, "-m", "deploy.demo.sample_erp", "--port", str(port), "--advance-every", "0"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
            config_path = Path(tmp) / "isthmus.yaml"
            config_path.write_text(
                E2E_CONFIG.format(mappings=REPO / "mappings", erp_url=f"http://127.0.0.1:{port}"), encoding="utf-8"
            )
            config = load_config(config_path)
            worker = Worker(config, run_sources=False, serve_health=False)
            now = datetime.now(UTC)
            bodies = [
                OutgoingMessage(
                    routing_key="customer.upserted",
                    body=Envelope(
                        type="customer.upserted",
                        source=Source(system="crm", entity="customer", record_id=f"B-{i}", version="1"),
                        occurred_at=now,
                        payload={
                            "customer_no": f"B-{i}",
                            "company": f"Bench Customer {i}",
                            "email": f"buyer{i}@bench.example",
                            "tier": "silver",
                            "status": "active",
                            "billing": {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "DE"},
                            "updated_at": "2026-11-24T10:00:00+08:00",
                            "version": 1,
                        },
                    ).to_bytes(),
                )
                for i in range(events)
            ]
            worker.start()
            publisher_broker = worker._new_broker()
            started = time.perf_counter()

            def publish() -> None:
                for i in range(0, len(bodies), 100):
                    publisher_broker.publish(bodies[i : i + 100])

            thread = threading.Thread(target=publish)
            thread.start()
            stats = worker.stats["bench_customers"]
            deadline = time.monotonic() + 300
            while stats.applied + stats.dead_lettered < events and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            thread.join()
            worker.stop()
            lags = sorted(stats.lags)
            return {
                "embedded_e2e_events_per_s": round(stats.applied / elapsed),
                "embedded_e2e_events": events,
                "embedded_e2e_dead_lettered": stats.dead_lettered,
                "embedded_e2e_p50_lag_ms": round(1000 * lags[len(lags) // 2], 1) if lags else None,
                "embedded_e2e_p99_lag_ms": round(1000 * lags[int(len(lags) * 0.99)], 1) if lags else None,
            }
    finally:
        erp.terminate()
        erp.wait(10)


def run_bench(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"machine_cores": os.cpu_count(), "python": sys.version.split()[0]}
    results.update(bench_mapping(0.5 if quick else 3.0))
    results.update(bench_embedded_e2e(1000 if quick else 10000))
    return results


if __name__ == "__main__":
    print(json.dumps(run_bench()))
