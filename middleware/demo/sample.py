"""`isthmus demo`: a sample CRM and a sample ERP synced through the embedded broker.

Starts both SAMPLE services (deploy/demo/) on loopback, seeds the CRM (with a few broken
records on purpose), runs a worker with deploy/demo/isthmus.yaml in this process, shows
progress until everything that can flow has flowed, and prints a summary. The broker and
store stay in .isthmus/demo/ so `isthmus dlq list --config deploy/demo/isthmus.yaml` shows
what was dead-lettered and why.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "deploy" / "demo" / "isthmus.yaml"
DEMO_STATE = REPO / ".isthmus" / "demo"
CRM_TOKEN = "demo-crm-token"


@dataclass
class DemoTargets:
    customers: int
    orders: int


def _targets(crm: Any) -> DemoTargets:
    """What should arrive: every customer but the broken ones; won orders but the broken ones."""
    with crm.lock:
        bad_customers = set(crm.bad_records["customers"])
        bad_orders = set(crm.bad_records["orders"])
        customers = sum(1 for key in crm.customers.rows if key not in bad_customers)
        orders = sum(
            1
            for key, order in crm.orders.rows.items()
            if order["stage"] == "won" and key not in bad_orders and order["customer_no"] not in bad_customers
        )
    return DemoTargets(customers, orders)


def _invoiced_in_crm(crm: Any) -> int:
    with crm.lock:
        return sum(1 for order in crm.orders.rows.values() if order.get("erp_status") == "invoiced")


def _save_erp_records(erp: Any, path: Path) -> None:
    """What the sample ERP holds when the demo ends, for a look after the services are gone."""
    import json

    with erp.lock:
        records = {"accounts": dict(erp.accounts), "sales_orders": dict(erp.orders)}
    path.write_text(json.dumps(records, indent=2, default=str), encoding="utf-8")


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter to copy)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def print_route_table(stats: dict[str, Any], out: Any) -> None:
    """Per route: applied, skipped, retried, dead-lettered and the intake-to-effect lag."""
    width = max([26, *(len(name) + 2 for name in stats)])
    header = f"{'applied':>9}{'skipped':>9}{'retried':>9}{'dead':>6}{'lag p50':>10}{'lag p99':>10}"
    print(f"\n{'route':<{width}}{header}", file=out)
    for name, route in stats.items():
        print(
            f"{name:<{width}}{route.applied:>9}{route.skipped:>9}{route.retried:>9}{route.dead_lettered:>6}"
            f"{percentile(route.lags, 50):>9.2f}s{percentile(route.lags, 99):>9.2f}s",
            file=out,
        )


def print_dead_letters(config: Any, out: Any) -> dict[str, int]:
    """List every route's dead letters with their reasons; returns the DLQ sizes."""
    from middleware.broker import open_broker
    from middleware.broker.base import dlq_name
    from middleware.ops.dlq import list_dead_letters

    broker = open_broker(config.model.broker, base_dir=config.base_dir)
    try:
        letters = list_dead_letters(broker, [r.name for r in config.model.routes])
        print(f"\ndead-letter queues ({len(letters)}):", file=out)
        for letter in letters:
            print(f"  {letter.route}: {letter.record} {letter.error_class}: {letter.error[:120]}", file=out)
        return {r.name: broker.depth(dlq_name(r.name)) for r in config.model.routes}
    finally:
        broker.close()


def run_demo(
    customers: int = 60,
    orders_per_customer: int = 2,
    keep_running: bool = False,
    timeout_s: float = 120.0,
    out: Any = None,
) -> int:
    from deploy.demo.sample_crm import SampleCrm
    from deploy.demo.sample_erp import SampleErp
    from middleware.config import load_config
    from middleware.runtime.worker import Worker

    out = out or sys.stdout
    shutil.rmtree(DEMO_STATE, ignore_errors=True)
    DEMO_STATE.mkdir(parents=True, exist_ok=True)
    crm = SampleCrm(token=CRM_TOKEN).start()
    erp = SampleErp(advance_every_s=0.3).start()
    seeded = crm.seed(customers=customers, orders_per_customer=orders_per_customer, with_bad_records=True)
    targets = _targets(crm)
    os.environ["DEMO_CRM_URL"] = crm.url
    os.environ["DEMO_ERP_URL"] = erp.url
    os.environ["DEMO_CRM_TOKEN"] = CRM_TOKEN
    print(f"sample CRM on {crm.url}, sample ERP on {erp.url} (samples, not real systems)", file=out)
    print(
        f"seeded {seeded['customers']} customers and {seeded['orders']} orders "
        f"({targets.orders} won); broken on purpose: {seeded['bad_records']}",
        file=out,
    )
    config = load_config(DEMO_CONFIG)
    log_path = DEMO_STATE / "worker.log"
    log_file = log_path.open("a", encoding="utf-8")
    worker = Worker(config, log_stream=log_file)
    worker.start()
    print(f"worker log (JSON lines, one correlation id per message): {shown_path(log_path)}", file=out)
    if worker.health:
        print(f"metrics on http://127.0.0.1:{worker.health.port}/metrics", file=out)
    started = time.monotonic()
    complete = False
    try:
        while time.monotonic() - started < timeout_s:
            erp_state = erp.state(with_effects=False)
            invoiced = _invoiced_in_crm(crm)
            dead = sum(s.dead_lettered for s in worker.stats.values())
            line = (
                f"\r  customers {erp_state['accounts']:>4}/{targets.customers}"
                f"  orders {erp_state['orders']:>4}/{targets.orders}"
                f"  invoiced in CRM {invoiced:>4}/{targets.orders}"
                f"  dead-lettered {dead:>3}  {time.monotonic() - started:5.1f}s"
            )
            print(line, end="", file=out, flush=True)
            if (
                erp_state["accounts"] >= targets.customers
                and erp_state["orders"] >= targets.orders
                and invoiced >= targets.orders
                and all(worker.broker.depth(r.name) == 0 for r in config.model.routes)
            ):
                complete = True
                break
            time.sleep(0.5)
        print(file=out)
        if keep_running:
            print("keeping the samples and the worker running; Ctrl-C stops", file=out)
            worker.install_signal_handlers()
            worker.wait()
    finally:
        if not worker.stop_event.is_set():
            worker.stop()
        erp_final = erp.state()
        _save_erp_records(erp, DEMO_STATE / "erp_records.json")
        crm.stop()
        erp.stop()
        log_file.close()

    elapsed = time.monotonic() - started
    print_route_table(worker.stats, out)
    print(
        f"\nERP now holds {erp_final['accounts']} accounts and {erp_final['orders']} sales orders "
        f"{erp_final['statuses']}; repeated writes ignored by idempotency key: {erp_final['duplicates']}",
        file=out,
    )
    sizes = print_dead_letters(config, out)
    status = "complete" if complete else f"INCOMPLETE after {timeout_s:.0f}s"
    print(f"\nsync {status} in {elapsed:.1f}s; DLQ sizes {sizes}", file=out)
    print(f"inspect: .venv/bin/isthmus dlq list --config {shown_path(DEMO_CONFIG)}", file=out)
    print(f"         the sample ERP's accounts and orders: {shown_path(DEMO_STATE / 'erp_records.json')}", file=out)
    return 0 if complete else 1
