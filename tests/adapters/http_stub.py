"""A scripted loopback HTTP server for adapter tests: answers come from a Python function.

For behaviours the sample systems do not show (odd pagination styles, status codes, slow
answers). It records every request it received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    delay_s: float = 0.0


Respond = Callable[[Seen], Answer]


def echo(status: int) -> Respond:
    """Answer every request with `status` and what it was sent (headers and body), as careless servers do.

    A secret in a request (a token header, a password in a login body) then reaches the
    adapter's error text unless the adapter blanks it: the contract suite's fault servers.
    """
    return lambda seen: Answer(
        status, {"error": "refused", "headers": seen.headers, "body": seen.body.decode(errors="replace")}
    )


class StubServer:
    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def handle_any(self) -> None:
                path, _, raw_query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    path,
                    {k: v[-1] for k, v in parse_qs(raw_query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with stub.lock:
                    stub.seen.append(seen)
                answer = stub.respond(seen)
                if answer.delay_s:
                    threading.Event().wait(answer.delay_s)
                payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
