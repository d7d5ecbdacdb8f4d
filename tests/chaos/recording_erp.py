"""A recording ERP on loopback: the chaos tests' HTTP target, which notes every effect it applies.

It speaks what the demo ERP speaks to the REST writer in `create_or_update` mode —
`POST /api/accounts` creates an account and answers its new id, `PUT /api/accounts/{id}`
updates one — with the mapped account body, an `Idempotency-Key` and an `X-Correlation-Id`,
and behaves like an ERP that honours idempotency keys:

* a write whose key it has not applied yet is an **effect**: an account is created (a new
  id: a create that runs twice leaves two accounts) or changed, and `(external_ref,
  account_name)` is appended to the effect log (the chaos messages give every message its
  own record and `account_name`, so the log tells which message's effect landed, and a
  second effect of one message — under another key, or a second create — shows as that pair
  twice);
* a write whose key it already applied is a **repeat**: answered with the first answer, not
  applied, and counted apart (the one write in flight when a worker died, or the one the
  writer timed out on, comes back this way by design); a repeat whose body differs from the
  first is a **conflict**, which no correct client produces;
* an account name containing `REJECT` is refused with 422 (a permanent error: dead letter).

Fault modes, switched from any thread: `unavailable` answers 503 to every write without
applying it; `hang` holds every write `hang_s` (longer than the writer's timeout) and then
applies it like any other — the slow ERP that did the work after the client gave up, whose
retry must then be recognised as a repeat.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import unquote

from deploy.demo.sample_server import QuietKeepAliveHandler

Mode = Literal["normal", "unavailable", "hang"]
ACCOUNTS = "/api/accounts"


@dataclass(frozen=True)
class Effect:
    ref: str  # the account's external_ref: the CRM record
    name: str  # its account_name: which message wrote it
    key: str  # the Idempotency-Key it came with
    account_id: str
    method: str


@dataclass
class TargetSnapshot:
    """A consistent copy of what the target saw, for the final accounting."""

    effects: list[Effect]
    repeats: int
    conflicts: list[str]
    rejected: Counter[str]
    refused_503: int
    hung: int
    unkeyed: int
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by the ERP's account id

    def effect_counts(self) -> Counter[tuple[str, str]]:
        return Counter((e.ref, e.name) for e in self.effects)

    def accounts_per_ref(self) -> Counter[str]:
        return Counter(str(a.get("external_ref")) for a in self.accounts.values())


class RecordingErp:
    """Start with `start()`, stop with `stop()`; `url` is the writer's base_url."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mode: Mode = "normal"
        self._hang_s = 0.0
        self._effects: list[Effect] = []
        self._distinct: set[tuple[str, str]] = set()
        self._answers: dict[str, tuple[int, bytes, bytes]] = {}  # key -> (status, answer, request body)
        self._accounts: dict[str, dict[str, Any]] = {}
        self._repeats = 0
        self._conflicts: list[str] = []
        self._rejected: Counter[str] = Counter()
        self._refused_503 = 0
        self._hung = 0
        self._unkeyed = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle ------------------------------------------------------------------
    def start(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.set_mode("normal")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ----- fault modes ----------------------------------------------------------------
    def set_mode(self, mode: Mode, hang_s: float = 0.0) -> None:
        with self._lock:
            self._mode = mode
            self._hang_s = hang_s

    # ----- reading --------------------------------------------------------------------
    def distinct_effects(self) -> int:
        with self._lock:
            return len(self._distinct)

    def snapshot(self) -> TargetSnapshot:
        with self._lock:
            return TargetSnapshot(
                effects=list(self._effects),
                repeats=self._repeats,
                conflicts=list(self._conflicts),
                rejected=Counter(self._rejected),
                refused_503=self._refused_503,
                hung=self._hung,
                unkeyed=self._unkeyed,
                accounts={account_id: dict(account) for account_id, account in self._accounts.items()},
            )

    # ----- one write ------------------------------------------------------------------
    def write(self, method: str, account_id: str | None, key: str | None, body: bytes) -> tuple[int, bytes]:
        """Apply or refuse one `POST /api/accounts` (account_id None) or `PUT /api/accounts/{id}`."""
        with self._lock:
            mode, hang_s = self._mode, self._hang_s
            if mode == "unavailable":
                self._refused_503 += 1
                return 503, b'{"error": "maintenance (recording ERP)"}'
            if mode == "hang":
                self._hung += 1
        if mode == "hang":
            time.sleep(hang_s)  # then apply: the work is done even though the client gave up
        try:
            record = json.loads(body)
        except ValueError:
            return 400, b'{"error": "body is not JSON"}'
        if not isinstance(record, dict):
            return 400, b'{"error": "body must be a JSON object"}'
        with self._lock:
            if key is None:
                self._unkeyed += 1
            elif key in self._answers:
                status, answer, first_body = self._answers[key]
                self._repeats += 1
                if first_body != body:
                    self._conflicts.append(f"{key}: first body {first_body[:200]!r}, now {body[:200]!r}")
                return status, answer
            status, answer = self._apply(method, account_id, key or "", record)
            if key is not None:
                self._answers[key] = (status, answer, body)
            return status, answer

    def _apply(self, method: str, account_id: str | None, key: str, record: dict[str, Any]) -> tuple[int, bytes]:
        name = record.get("account_name")
        if not isinstance(name, str) or not name.strip():
            return 400, b'{"error": "account_name is required"}'
        if account_id is None:
            account_id = f"A{len(self._accounts) + 1:07d}"
        elif account_id not in self._accounts:
            return 404, json.dumps({"error": f"unknown account {account_id!r}"}).encode()
        ref = str(record.get("external_ref") or self._accounts.get(account_id, {}).get("external_ref") or "")
        if "REJECT" in name:
            self._rejected[ref] += 1
            return 422, b'{"error": "account rejected by the recording ERP"}'
        account = {**self._accounts.get(account_id, {}), **record, "id": account_id}
        self._accounts[account_id] = account
        self._effects.append(Effect(ref, name, key, account_id, method))
        self._distinct.add((ref, name))
        return (201 if method == "POST" else 200), json.dumps(account).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, erp: RecordingErp) -> None:
        self.erp = erp
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that timed out and closed its connection is part of the plan."""


class _Handler(QuietKeepAliveHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self._body()
        if self.path.partition("?")[0].rstrip("/") != ACCOUNTS:
            self._reply(404, b'{"error": "no such resource"}')
            return
        self._reply(*self.server.erp.write("POST", None, self.headers.get("Idempotency-Key"), body))

    def do_PUT(self) -> None:
        body = self._body()
        prefix, _, account_id = self.path.partition("?")[0].rpartition("/")
        if prefix != ACCOUNTS or not account_id:
            self._reply(404, b'{"error": "no such resource"}')
            return
        self._reply(*self.server.erp.write("PUT", unquote(account_id), self.headers.get("Idempotency-Key"), body))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, answer: bytes) -> None:
        head = f"HTTP/1.1 {status} -\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n"
        try:
            self.wfile.write(head.encode("latin-1") + answer)
        except OSError:  # the client timed out and left (hang mode): the effect stands anyway
            self.close_connection = True
