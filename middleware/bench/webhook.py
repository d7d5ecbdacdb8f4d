"""`isthmus bench`: webhook ingest on RabbitMQ, delivered end to end.

`webhook_ingest_events_per_s`: signed JSON events, one per request and signed with the
receiver's default scheme (`X-Isthmus-Signature: sha256=<hex HMAC-SHA256 of the raw
body>`), POSTed by 64 concurrent keep-alive HTTP/1.1 clients to the webhook receiver of an
`isthmus worker --no-routes` process (receivers and consumers run as separate processes, as
one would deploy them on two cores), which answers 202 only once RabbitMQ confirmed the
events; `isthmus worker --no-sources` processes consume them and write them to the
loopback HTTP target. Counted from the first request to the last write landed, so every
event counted was both durably enqueued and delivered.

The clients are one asyncio process writing pre-built, pre-signed requests on raw sockets:
the cheapest load generator Python has, because on two cores it shares the CPU with the
receiver, the consumers, the target and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from middleware.bench.harness import free_port, step, stop_processes, wait_port
from middleware.bench.rabbitmq import (
    CpuMeter,
    LoopbackTarget,
    bench_run,
    running_workers,
    shards_for,
    wait_landed,
)
from middleware.bench.workload import customer_payload

WEBHOOK_PATH = "/webhooks/crm/customers"
SECRET_ENV = "ISTHMUS_BENCH_WEBHOOK_SECRET"


def webhooks_settings(port: int) -> dict[str, Any]:
    """The `webhooks:` section: one signed endpoint for CRM customer events."""
    endpoint = {
        "path": WEBHOOK_PATH,
        "system": "crm",
        "entity": "customer",
        "message_type": "customer.upserted",
        "id_field": "customer_no",
        "version_field": "version",
        "occurred_field": "updated_at",
        "secret": "${" + SECRET_ENV + "}",
    }
    return {"host": "127.0.0.1", "port": port, "endpoints": {"crm_customers": endpoint}}


def signed_requests(count: int, tag: str, port: int, secret: str) -> list[bytes]:
    """Complete HTTP/1.1 requests, one event each, signed the way the receiver checks."""
    from adapters.webhook.receiver import SIGNATURE_HEADER, sign

    built = []
    for i in range(count):
        body = json.dumps(customer_payload(i, tag)).encode()
        head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{SIGNATURE_HEADER}: {sign(secret, body)}\r\n"
            f"X-Correlation-Id: bench-{tag}-{i}\r\n\r\n"
        )
        built.append(head.encode("latin-1") + body)
    return built


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


async def post_all(port: int, requests: list[bytes], clients: int) -> dict[int, int]:
    """Send every request over `clients` keep-alive connections; statuses counted.

    A 503 (the broker refused) is sent again after its Retry-After, as a sender would."""
    statuses: dict[int, int] = {}
    queue: list[int] = list(range(len(requests) - 1, -1, -1))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                index = queue.pop()
                writer.write(requests[index])
                status = await _read_status(reader)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 503:
                    queue.insert(0, index)
                    await asyncio.sleep(1.0)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def bench_webhook_ingest(
    amqp_url: str, events: int, clients: int = 64, consumers: int = 1, shards: int | None = None
) -> dict[str, Any]:
    """Events/s from the first POST to the last write landed (accepted and delivered).

    `shards` defaults to what `consumers` need (`shards_for`); 1 on a broker without sharding."""
    tag = f"W{uuid.uuid4().hex[:6]}"
    secret = uuid.uuid4().hex
    port = free_port()
    requests = signed_requests(events, tag, port, secret)
    with (
        LoopbackTarget() as target,
        bench_run(
            amqp_url,
            target,
            shards=shards_for(consumers) if shards is None else shards,
            webhooks=webhooks_settings(port),
            env={SECRET_ENV: secret},
        ) as run,
    ):
        with running_workers(run, consumers) as workers:
            receiver = run.start_worker("--no-routes")
            try:
                try:
                    wait_port(port, "the webhook receiver")
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}: {run.worker_log(receiver)}") from None
                pids = {f"consumer{n}": proc.pid for n, proc in enumerate(workers)}
                meter = CpuMeter({"receiver": receiver.pid, **pids, "target": target.pid or 0, "clients": os.getpid()})
                meter.start()
                started = time.monotonic()
                statuses = asyncio.run(post_all(port, requests, clients))
                accepted_s = time.monotonic() - started
                state = wait_landed(target, events, timeout_s=max(120.0, events / 100))
                cpu = meter.stop("webhook_ingest")
            finally:
                stop_processes([receiver])
        elapsed = (state["last_landed_at"] or time.monotonic()) - started
        if state["landed"] < events:
            step(f"   webhook ingest: only {state['landed']} of {events} events landed; statuses {statuses}")
        return {
            "webhook_ingest_events_per_s": round(state["landed"] / elapsed),
            "webhook_accepted_events_per_s": round(statuses.get(202, 0) / accepted_s),
            "webhook_ingest_events": events,
            "webhook_ingest_landed": state["landed"],
            "webhook_ingest_clients": clients,
            "webhook_ingest_statuses": {str(k): v for k, v in sorted(statuses.items())},
            **cpu,
        }


if __name__ == "__main__":
    print(json.dumps(bench_webhook_ingest(sys.argv[1], int(sys.argv[2]))))
