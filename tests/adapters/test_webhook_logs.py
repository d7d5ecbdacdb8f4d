"""The webhook server logs structured events only: a sender resetting mid-request is one JSON line.

socketserver's default `handle_error` prints a traceback to stderr, which lands raw in a
JSON log pipeline (one event split over twenty lines, none of them parseable). Checked on a
real worker process: its stderr must hold JSON lines only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import yaml

from middleware.bench.harness import free_port, wait_port
from tests.e2e.harness import REPO


def _reset(port: int, payload: bytes) -> None:
    """Send `payload`, then close with an RST (SO_LINGER 0) instead of a FIN."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        time.sleep(0.2)  # the server is now blocked reading the rest of the body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_client_reset_mid_request_leaves_only_json_lines_on_a_workers_stderr(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "broker": f"embedded:///{tmp_path}/broker.db",
        "store": f"sqlite:///{tmp_path}/state.db",
        "mappings": [],
        "observability": {"port": 0, "log_format": "json", "log_level": "info"},
        "webhooks": {
            "port": port,
            "endpoints": {
                "crm_hook": {
                    "path": "/hooks/crm",
                    "system": "crm",
                    "entity": "customer",
                    "message_type": "customer.upserted",
                    "id_field": "id",
                }
            },
        },
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(path)],
            cwd=REPO,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        wait_port(port)
        head = b"POST /hooks/crm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        for _ in range(3):
            _reset(port, head + b'{"id": "C-1", "na')  # the body is cut off: the read is reset
        deadline = time.monotonic() + 10
        while b"webhook_connection_reset" not in stderr.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    lines = [line for line in stderr.read_text(encoding="utf-8").splitlines() if line.strip()]
    not_json = []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not not_json, "non-JSON lines on the worker's stderr:\n" + "\n".join(not_json[:20])
    resets = [e for e in events if e.get("event") == "webhook_connection_reset"]
    assert len(resets) == 3
    assert resets[0]["error"] == "ConnectionResetError"
