"""A broker or state file that lost its contents or is damaged stops the start, naming the file.

An outside probe truncated `broker.db` to zero bytes: the worker started on an empty broker,
3,000 queued messages vanished and /readyz said ready. A damaged file gave SQLite's bare
"database disk image is malformed". These tests run the real `isthmus worker` on real files.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from middleware.broker.base import OutgoingMessage
from middleware.broker.embedded import EmbeddedBroker
from middleware.errors import DataFileError
from middleware.store.base import RecordRef
from middleware.store.sqlite import SqliteStore
from tests.cli.cli_runner import TRACEBACK, Run, run_isthmus

QUEUED = 3_000


def config(folder: Path) -> Path:
    path = folder / "isthmus.yaml"
    path.write_text(
        "broker: embedded://broker.db\nstore: sqlite://state.db\nmappings: []\nobservability: {port: 0}\n",
        encoding="utf-8",
    )
    return path


def worker(folder: Path) -> Run:
    """`isthmus worker` in `folder`; it must refuse to start, so a run past 20 s fails the test."""
    try:
        return run_isthmus(folder, "worker", "--config", config(folder), timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("isthmus worker started (and ran) on the file instead of refusing it") from None


def filled_broker(path: Path) -> None:
    broker = EmbeddedBroker(path)
    broker.setup_route("customers", ["customer.*"])
    broker.publish([OutgoingMessage("customer.upserted", b'{"n": %d}' % n + b" " * 200) for n in range(QUEUED)])
    broker.close()


def damage(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(b"\xde\xad\xbe\xef" * (length // 4))


def test_zero_length_broker_file_stops_the_worker_naming_the_file(tmp_path: Path) -> None:
    broker_file = tmp_path / "broker.db"
    filled_broker(broker_file)
    broker_file.write_bytes(b"")  # what the probe did: the 3,000 messages are gone
    run = worker(tmp_path)
    assert TRACEBACK not in run.output, run.err
    assert run.code == 2, run.output
    assert f"the embedded broker file {broker_file} exists but holds no broker tables (0 bytes, empty)" in run.err
    assert f"delete it (rm {broker_file}" in run.err
    assert broker_file.stat().st_size == 0, "the refused file was written to"


def test_broker_file_of_another_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE something_else (x)")
    with pytest.raises(DataFileError) as refused:
        EmbeddedBroker(path)
    assert refused.value.file == str(path)
    assert "holds no broker tables" in str(refused.value)


def test_deleting_the_lost_broker_file_starts_an_empty_broker(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    path.write_bytes(b"")
    with pytest.raises(DataFileError):
        EmbeddedBroker(path)
    path.unlink()
    broker = EmbeddedBroker(path)
    broker.setup_route("customers", ["customer.*"])
    assert broker.depth("customers") == 0
    broker.close()
    EmbeddedBroker(path).close()  # and it opens again, as a kept file


def test_damaged_broker_file_stops_the_worker_naming_the_file(tmp_path: Path) -> None:
    broker_file = tmp_path / "broker.db"
    filled_broker(broker_file)
    size = broker_file.stat().st_size
    assert size > 64 * 4096
    damage(broker_file, 16 * 4096, 32 * 4096)  # message pages, not the schema page
    run = worker(tmp_path)
    assert TRACEBACK not in run.output, run.err
    assert run.code == 2, run.output
    assert f"the embedded broker file {broker_file} is damaged" in run.err
    assert "restore it from a backup" in run.err


def test_broker_file_that_is_not_a_database_names_the_file(tmp_path: Path) -> None:
    broker_file = tmp_path / "broker.db"
    filled_broker(broker_file)
    damage(broker_file, 0, 100)  # the header
    run = worker(tmp_path)
    assert run.code == 2 and TRACEBACK not in run.output, run.output
    assert f"the embedded broker file {broker_file} is damaged (file is not a database)" in run.err


def test_damaged_state_file_stops_the_worker_naming_the_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state.db"
    store = SqliteStore(str(state_file))
    store.link(RecordRef("crm", "customer", "C-1"), RecordRef("erp", "account", "A-1"))
    store.close()
    damage(state_file, 0, 100)
    run = worker(tmp_path)
    assert TRACEBACK not in run.output, run.err
    assert run.code == 2, run.output
    assert f"the state store file {state_file} is damaged" in run.err
    assert "forgets every cross-reference" in run.err


def test_processes_creating_the_broker_file_at_once_all_open_it(tmp_path: Path) -> None:
    """A new file is linked into place with its schema, so no opener sees it empty and refuses it."""
    path = tmp_path / "broker.db"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_it() -> None:
        start.wait()
        try:
            EmbeddedBroker(path).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")] == [], "a draft file was left behind"
