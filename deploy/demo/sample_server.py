"""What the SAMPLE CRM and SAMPLE ERP share: a lean threaded JSON-over-HTTP server.

Sample code, for the demo and tests, not a production server. It keeps connections alive
(HTTP/1.1, Content-Length on every response), serves each connection on a daemon thread,
writes nothing to stderr per request, and answers errors as `{"error": "..."}`.
"""

from __future__ import annotations

import argparse
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote

MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; numbers with a fraction become Decimal (no float rounding)."""
        return json.loads(self.body or b"null", parse_float=Decimal)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, for a write; `Refused` (400) when it is not JSON or not an object."""
        try:
            body = self.json()
        except ValueError as exc:
            raise Refused(error(400, f"body is not JSON: {exc}")) from None
        if not isinstance(body, dict):
            raise Refused(error(400, "body must be a JSON object"))
        return body

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, **headers: str) -> Response:
    return Response(status, {"error": message}, dict(headers))


class Refused(Exception):
    """Raised while handling a request to answer it with `response` (a 4xx) instead: lets a
    check deep in a handler refuse the request without every caller passing the answer up."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.body)
        self.response = response


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(body: Any) -> bytes:
    return json.dumps(body, default=_json_default, separators=(",", ":")).encode()


def parse_moment(text: str) -> datetime:
    """An aware datetime from ISO 8601 ('Z' allowed; naive = UTC); ValueError otherwise."""
    text = text.strip().replace(" ", "+")  # a raw '+' in a query string arrives as a space
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """`?name=` as an int in [low, high], `default` when absent; `Refused` (400 "bad query") otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Refused(error(400, f"bad query: {exc}")) from None
    if not low <= value <= high:
        raise Refused(error(400, f"bad query: {name} must be between {low} and {high}"))
    return value


def query_moment(request: Request, name: str) -> datetime | None:
    """`?name=` as an aware datetime (see `parse_moment`), None when absent; `Refused` (400) otherwise."""
    text = request.query.get(name)
    if not text:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise Refused(error(400, f"bad query: {exc}")) from None


class MonotonicClock:
    """Wall-clock time that never repeats or goes back: each reading is at least `tick` later."""

    def __init__(self, zone: tzinfo, tick: timedelta) -> None:
        self.zone = zone
        self.tick = tick
        self.last: datetime | None = None

    def next(self) -> datetime:
        now = datetime.now(self.zone)
        if self.last is not None and now <= self.last:
            now = self.last + self.tick
        self.last = now
        return now

    def at_least(self, moment: datetime) -> None:
        if self.last is None or moment > self.last:
            self.last = moment.astimezone(self.zone)


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], service: SampleService) -> None:
        self.service = service
        super().__init__(address, _Handler)


class QuietKeepAliveHandler(BaseHTTPRequestHandler):
    """What a loopback server answering thousands of requests a second needs: HTTP/1.1 kept
    alive, no Nagle delay on small answers, and no line on stderr per request."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: the pipeline sends thousands of requests a second."""


class _Handler(QuietKeepAliveHandler):
    server: _Server

    def _serve(self) -> None:
        path, _, raw_query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(error(413, "body too large"))
            return
        body = self.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, unquote(path), query, headers, body)
        try:
            response = self.server.service.handle(request)
        except Exception as exc:  # a sample server answers 500 rather than dropping the connection
            response = error(500, f"{type(exc).__name__}: {exc}")
        self._reply(response)

    def _reply(self, response: Response) -> None:
        """Status line, headers and body in one write (one segment per answer on loopback)."""
        payload = b"" if response.body is None else encode(response.body)
        lines = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class SampleService:
    """Base of the sample systems: start/stop on a background thread, bearer check, dispatch."""

    name = "sample"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, request: Request) -> Response:
        is_admin = request.path.startswith("/admin/")
        if self.token is not None and not is_admin and request.header("authorization") != f"Bearer {self.token}":
            return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        if request.path == "/" and request.method == "GET":
            return Response(200, {"service": self.name, "sample": True})
        try:
            return self.admin(request) if is_admin else self.route(request)
        except Refused as refused:
            return refused.response

    def route(self, request: Request) -> Response:
        """An `/api` request (or any other path but `/admin/*`)."""
        raise NotImplementedError

    def admin(self, request: Request) -> Response:
        """`/admin/*`: `GET /admin/state[?effects=0]`, or a POST that `admin_action` knows; 400 on a bad body."""
        method, path = request.method, request.path.rstrip("/")
        if method == "GET" and path == "/admin/state":
            return Response(200, self.state(with_effects=request.query.get("effects", "1") != "0"))
        if method != "POST":
            return error(404, f"no route for {method} {path}")
        try:
            answer = self.admin_action(path, request.json() or {})
        except (ValueError, TypeError, AttributeError) as exc:
            return error(400, str(exc))
        return answer if answer is not None else error(404, f"no route for {method} {path}")

    def state(self, with_effects: bool = True) -> dict[str, Any]:
        """What `GET /admin/state` answers: counts and the effect log, for tests and the demo."""
        raise NotImplementedError

    def admin_action(self, path: str, body: Any) -> Response | None:
        """The answer to `POST path` under /admin/, or None for a path the system does not know."""
        return None


def run_main(
    description: str,
    default_port: int,
    build: Callable[[argparse.Namespace], SampleService],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    """`python -m deploy.demo.sample_xxx --port N`: serve until interrupted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer <token>' on /api")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    service = build(args).start()
    print(f"{service.name} listening on {service.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    return 0
