"""`snapshot_initial_load_vs_read_limit`: an initial load from a list API without changed-since.

The sample CRM runs in its own process with its accounts list (`/api/accounts`: no
changed-since filter, so the integration reads it in `incremental: snapshot` mode) and a
fixed delay per answer, as a remote CRM has. Two reads of the same list, in the same run:

* the **read limit**: a plain paged read with `requests` (GET each page, decode the JSON) —
  as fast as anything can take the list off this API;
* the **initial load**: the real `SourcePoller` with the REST reader in snapshot mode from no
  watermark, publishing every record durably to the embedded broker (a route queue bound
  to it) and storing the hashes as the watermark at the end.

The figure is load / limit in records per second (best of three interleaved rounds each);
1.0 means the intake keeps pace with the API. The reader fetches one page ahead while the
poller publishes, which is what lets it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from typing import Any

from middleware.bench.harness import free_port, wait_port
from middleware.bench.suite import REPO

PAGE_SIZE = 100
LATENCY_MS = 10.0
ROUNDS = 3


def _plain_read(url: str) -> int:
    import requests

    session = requests.Session()
    session.trust_env = False
    count, page = 0, 1
    try:
        while True:
            answer = session.get(f"{url}/api/accounts", params={"page": page, "page_size": PAGE_SIZE}, timeout=30)
            answer.raise_for_status()
            body = answer.json()
            count += len(body["data"])
            if not body["has_more"]:
                return count
            page += 1
    finally:
        session.close()


def _initial_load(url: str, tmp: str) -> tuple[int, float]:
    """(records published, seconds the poll took): opening the adapter, broker and store is a worker's
    start-up, not part of the load, and is not timed."""
    from adapters.rest import RestAdapter
    from middleware.broker import open_broker
    from middleware.config import SourceConfig
    from middleware.runtime.poller import SourcePoller
    from middleware.store import open_store

    read = {
        "path": "/api/accounts",
        "records_path": "data",
        "id_field": "customer_no",
        "incremental": "snapshot",
        "pagination": {"type": "page", "page_size": PAGE_SIZE},
    }
    adapter = RestAdapter("crm", {"base_url": url, "entities": {"account": {"read": read}}})
    broker = open_broker(f"embedded:///{tmp}/broker.db")
    store = open_store(f"sqlite:///{tmp}/state.db")
    broker.setup_route("accounts", ["customer.upserted"])
    source = SourceConfig(name="crm_accounts", system="crm", entity="account", emits="customer.upserted")
    poller = SourcePoller(source, adapter.reader(), broker, store, capabilities=adapter.capabilities)
    try:
        started = time.perf_counter()
        published = poller.poll_once()
        took = time.perf_counter() - started
        assert (store.get_watermark("source:crm_accounts") or "").startswith("snapshot:")
        return published, took
    finally:
        adapter.close()
        broker.close()
        store.close()


def bench_snapshot_initial_load(records: int, latency_ms: float = LATENCY_MS) -> dict[str, Any]:
    """Initial load in snapshot mode vs a plain paged read of the same list (see the module docstring)."""
    from middleware.observability import configure_logging

    configure_logging("json", "warning")  # stderr: stdout carries only the JSON
    port = free_port()
    crm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy.demo.sample_crm",
            "--port",
            str(port),
            "--customers",
            str(records),
            "--orders-per-customer",
            "0",
            "--no-bad-records",
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, "the sample CRM")
        url = f"http://127.0.0.1:{port}"
        _plain_read(url)  # warm-up: connections, the server's sorted index
        limit = load = 0.0
        for _round in range(ROUNDS):  # interleaved, best of each: a busy machine slows one run, not the figure
            started = time.perf_counter()
            read = _plain_read(url)
            limit = max(limit, read / (time.perf_counter() - started))
            with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
                loaded, took = _initial_load(url, tmp)  # a fresh store: each round is an initial load
            load = max(load, loaded / took)
            if read != records or loaded != records:
                raise RuntimeError(f"read {read} and loaded {loaded} of {records} accounts")
        return {
            "snapshot_initial_load_records_per_s": round(load),
            "crm_paged_read_records_per_s": round(limit),
            "snapshot_initial_load_vs_read_limit": round(load / limit, 2),
            "snapshot_initial_load_records": records,
            "snapshot_initial_load_crm_latency_ms": latency_ms,
        }
    finally:
        crm.terminate()
        crm.wait(10)
