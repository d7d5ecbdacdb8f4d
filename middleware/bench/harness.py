"""What every bench part shares: progress lines, percentiles, ports, a background publisher
and the sample ERP in a process of its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def step(text: str) -> None:
    """Progress on stderr, so stdout stays the one JSON object `--json` promises."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def publish_in_background(broker: Any, messages: Sequence[Any], batch: int = 100) -> threading.Thread:
    """Publish `messages` in batches from a thread, so the caller can time how they are consumed."""

    def publish() -> None:
        for i in range(0, len(messages), batch):
            broker.publish(messages[i : i + batch])

    thread = threading.Thread(target=publish, name="bench-publisher")
    thread.start()
    return thread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, what: str = "the sample ERP", timeout_s: float = 30) -> None:
    """Until something listens on 127.0.0.1:`port`; the bench's servers start in other processes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}")


def stop_processes(procs: Sequence[subprocess.Popen[Any]], grace_s: float = 30.0) -> None:
    """SIGTERM every process (a worker drains its batch), wait up to `grace_s` for each, then
    SIGKILL what is still running: a bench run never leaves a process behind."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def sample_erp_process() -> Iterator[int]:
    """The sample ERP (status steps off) in a process of its own, so it does not share the
    bench's GIL; yields its port once it listens, and stops it on the way out."""
    port = free_port()
    erp = subprocess.Popen(
        [sys.executable, "-m", "deploy.demo.sample_erp", "--port", str(port), "--advance-every", "0"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        erp.terminate()
        erp.wait(10)
