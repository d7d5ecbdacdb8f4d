"""`isthmus bench`: CRM customers into a real Tryton, through Isthmus and directly.

* `tryton_sync_records_per_s`: CRM customer envelopes published to the embedded broker
  while a worker (in this process) consumes them, maps them through
  `crm_customer_to_canonical` → `canonical_customer_to_tryton_party` and writes them with
  the Tryton adapter; counted from the first publish to the last applied party.
* `tryton_direct_records_per_s`: the floor an integration cannot beat: a minimal JSON-RPC
  client (one `requests` session, logged in once, the country id known up front) creating
  the same parties — name, code, an address, an e-mail — in `create` calls of the same
  batch size, nothing else.

Both run against the same `trytond` (a local one on SQLite, see
adapters/tryton/localserver.py), alternating in rounds so that both see the same database
growth and machine noise; the target is sync ≥ 80 % of direct.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from middleware.bench.configs import bench_config, customer_route, write_config
from middleware.bench.harness import publish_in_background
from middleware.bench.workload import bench_envelopes, customer_payload

BATCH = 200


def _customer(tag: str, i: int) -> dict[str, Any]:
    """The bench customer (customer_no `B<tag>-<i>`) with a name, e-mail and street of its own
    per round, so each round's parties are told apart in Tryton."""
    record = customer_payload(i, f"B{tag}")
    return {
        **record,
        "company": f"Bench Customer {tag} {i}",
        "email": f"buyer{i}@bench-{tag}.example",
        "billing": {**record["billing"], "street": f"Ring {i}"},
    }


def _rpc(session: Any, url: str, method: str, params: list[Any], auth: str | None = None) -> Any:
    headers = {"Authorization": auth} if auth else {}
    body = json.dumps({"id": 1, "method": method, "params": params})
    reply = session.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=120)
    reply.raise_for_status()
    answer = reply.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def direct_batched_creates(server: Any, tag: str, count: int) -> float:
    """Seconds the minimal direct client takes to create `count` parties."""
    import requests

    url = f"{server.url}/{server.database}/rpc/"
    session = requests.Session()
    session.trust_env = False
    try:
        login = [server.username, {"password": server.password}, "en"]
        user_id, token = _rpc(session, url, "common.db.login", login)[:2]
        auth = "Session " + base64.b64encode(f"{server.username}:{user_id}:{token}".encode()).decode()
        context = _rpc(session, url, "model.res.user.get_preferences", [True, {}], auth)
        (germany,) = _rpc(session, url, "model.country.country.search", [[["code", "=", "DE"]], 0, 1, None, context],
                          auth)
        records = []
        for i in range(count):
            c = _customer(tag, i)
            records.append(
                {
                    "name": c["company"],
                    "code": c["customer_no"],
                    "active": True,
                    "addresses": [["create", [{"street": c["billing"]["street"], "postal_code": "10115",
                                               "city": "Berlin", "country": germany}]]],
                    "contact_mechanisms": [["create", [{"type": "email", "value": c["email"]}]]],
                }
            )
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            _rpc(session, url, "model.party.party.create", [records[start : start + BATCH], context], auth)
        return time.perf_counter() - started
    finally:
        session.close()


def pipeline_sync(server: Any, workdir: Path, tag: str, count: int) -> float:
    """Seconds from the first publish to the last party applied through a worker."""
    import os

    from middleware.broker import open_broker
    from middleware.config import load_config
    from middleware.runtime.worker import Worker

    directory = workdir / f"sync-{tag}"
    directory.mkdir()
    tryton = {
        "type": "tryton",
        "url": server.url,
        "database": server.database,
        "username": server.username,
        "password": "${ISTHMUS_BENCH_TRYTON_PASSWORD}",
        "write_chunk": BATCH,
        "entities": {"party": {"write": {"key_field": "code"}}},
    }
    route = customer_route("bench_tryton_customers", "tryton", "party", "canonical_customer_to_tryton_party", BATCH)
    config = bench_config("embedded://broker.db", "sqlite://state.db", {"tryton": tryton}, [route])
    path = write_config(directory / "isthmus.yaml", config)
    os.environ["ISTHMUS_BENCH_TRYTON_PASSWORD"] = server.password
    loaded = load_config(path)
    messages = bench_envelopes(count, f"B{tag}", payload=lambda i, _: _customer(tag, i))
    worker = Worker(loaded, run_sources=False, serve_health=False).start()
    publisher = open_broker(loaded.model.broker, base_dir=loaded.base_dir)
    try:
        stats = worker.stats["bench_tryton_customers"]
        started = time.perf_counter()

        thread = publish_in_background(publisher, messages)
        deadline = time.monotonic() + 600
        while stats.applied + stats.dead_lettered < count and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        thread.join()
        if stats.dead_lettered or stats.applied < count:
            raise RuntimeError(f"sync applied {stats.applied}, dead-lettered {stats.dead_lettered} of {count}")
        return elapsed
    finally:
        publisher.close()
        worker.stop()


def bench_tryton(records: int = 2000, rounds: int = 2) -> dict[str, Any]:
    """Both figures against one local Tryton, alternating `rounds` times (records split evenly).

    Raises `adapters.tryton.localserver.TrytonUnavailable` when trytond is not installed.
    """
    from adapters.tryton.localserver import LocalTryton

    per_round = max(BATCH, records // rounds)
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-tryton-") as tmp:
        workdir = Path(tmp)
        server = LocalTryton(workdir / "tryton").start()
        try:
            # warm up both paths (login, model definitions, SQLite pages) outside the clock
            direct_batched_creates(server, "wd", BATCH)
            pipeline_sync(server, workdir, "ws", BATCH)
            direct_s = sync_s = 0.0
            for n in range(rounds):
                direct_s += direct_batched_creates(server, f"d{n}", per_round)
                sync_s += pipeline_sync(server, workdir, f"s{n}", per_round)
        finally:
            server.stop()
    total = per_round * rounds
    sync_rate, direct_rate = total / sync_s, total / direct_s
    return {
        "tryton_sync_records_per_s": round(sync_rate),
        "tryton_direct_records_per_s": round(direct_rate),
        "tryton_sync_vs_direct": round(sync_rate / direct_rate, 2),
        "tryton_records": total,
    }


if __name__ == "__main__":
    print(json.dumps(bench_tryton(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
