"""Embedded broker: a message whose consumer died keeps its place in the queue.

If it went behind everything published meanwhile, a later version of the same record would
be written first — and, for a record the target did not know yet, created a second time.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from middleware.broker import open_broker
from middleware.broker.base import OutgoingMessage


def _lease_and_die(url: str) -> None:
    broker = open_broker(url)
    assert len(broker.fetch("q", 2, 1.0)) == 2
    # the process ends without ack or close: like SIGKILL, its leases stay behind


def test_a_dead_consumers_messages_come_back_ahead_of_later_ones(tmp_path: Path) -> None:
    url = f"embedded:///{tmp_path}/broker.db?visibility_timeout=60"
    broker = open_broker(url)
    broker.setup_route("q", ["#"])
    broker.publish([OutgoingMessage("customer.upserted", f"v1-{n}".encode()) for n in range(4)])
    child = multiprocessing.get_context("spawn").Process(target=_lease_and_die, args=(url,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    broker.publish([OutgoingMessage("customer.upserted", b"v2-0")])

    restarted = open_broker(url)  # finds the dead process's leases and frees them at once
    bodies = [d.body for d in restarted.fetch("q", 10, 1.0)]
    assert bodies == [b"v1-0", b"v1-1", b"v1-2", b"v1-3", b"v2-0"]


def test_a_handed_back_message_keeps_its_place(tmp_path: Path) -> None:
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    broker.setup_route("q", ["#"])
    broker.publish([OutgoingMessage("a.b", body) for body in (b"1", b"2", b"3")])
    first = broker.fetch("q", 1, 1.0)
    broker.publish([OutgoingMessage("a.b", b"4")])
    broker.requeue(first)
    assert [d.body for d in broker.fetch("q", 10, 1.0)] == [b"1", b"2", b"3", b"4"]
