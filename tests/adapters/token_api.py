"""A loopback API that hands out expiring tokens, for the OAuth2 and login auth flows.

Behaves like the SaaS APIs these flows are written for (recorded shapes, simplified):

* `POST /oauth/token` (form `grant_type=client_credentials`, client id/secret as HTTP Basic
  or as form fields) → `{"access_token", "token_type": "Bearer", "expires_in"}`; 401
  `{"error": "invalid_client"}` for wrong credentials.
* `POST /api/login` (JSON `{"user", "pass"}`) → `{"data": {"session": ..., "ttl": ...}}`.
* `GET /api/things`, `POST /api/things`, `OPTIONS /api/things`, `GET /api/version`: need a
  live token (`Authorization: Bearer <t>` or `X-Session: <t>`), else 401. A token is live
  until its lifetime ends or `revoke_all()` is called.

Runs on the scripted `StubServer`, so every request is recorded in `server.seen`.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from http_stub import Answer, Seen, StubServer

CLIENT_ID = "isthmus-client"
CLIENT_SECRET = "s3cret-client-value"
USER = "integration"
PASSWORD = "pw-for-login-9"
THINGS = [{"id": i, "name": f"thing {i}", "updated": f"2026-01-01T00:0{i}:00+00:00"} for i in range(1, 4)]


class TokenApi:
    def __init__(self, lifetime_s: float = 3600.0, version: str = "2.7") -> None:
        self.lifetime_s = lifetime_s
        self.version = version
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # token → expires at (monotonic)
        self.counter = itertools.count(1)
        self.issued: list[str] = []
        self.refused: list[Seen] = []  # API calls answered 401
        self.written: list[Any] = []
        self.server = StubServer(self.respond)
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.server.seen if s.method == method and s.path == path]

    def _issue(self) -> tuple[str, float]:
        with self.lock:
            token = f"tok-{next(self.counter)}-{time.monotonic_ns()}"
            self.tokens[token] = time.monotonic() + self.lifetime_s
            self.issued.append(token)
        return token, self.lifetime_s

    def _live(self, seen: Seen) -> bool:
        header = seen.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else seen.headers.get("x-session", "")
        with self.lock:
            expires = self.tokens.get(token)
        return expires is not None and time.monotonic() < expires

    def respond(self, seen: Seen) -> Answer:
        if seen.method == "POST" and seen.path == "/oauth/token":
            return self._token(seen)
        if seen.method == "POST" and seen.path == "/api/login":
            body = seen.json()
            if body != {"user": USER, "pass": PASSWORD, "tenant": "t1"}:
                return Answer(401, {"error": "bad login"})
            token, ttl = self._issue()
            return Answer(200, {"data": {"session": token, "ttl": ttl}})
        if not self._live(seen):
            self.refused.append(seen)
            return Answer(401, {"error": "token expired or revoked"}, {"WWW-Authenticate": "Bearer"})
        if seen.path == "/api/version":
            return Answer(200, {"build": {"api_version": self.version}}, {"X-Api-Version": self.version})
        if seen.path == "/api/things":
            if seen.method == "GET":
                return Answer(200, {"things": THINGS})
            if seen.method == "OPTIONS":
                return Answer(200, None, {"Allow": "GET, POST, OPTIONS"})
            if seen.method == "POST":
                with self.lock:
                    self.written.append(seen.json())
                return Answer(201, {"id": f"T-{len(self.written)}"})
        if seen.path == "/":
            return Answer(200, {"service": "token api"})
        return Answer(404, {"error": f"no route {seen.method} {seen.path}"})

    def _token(self, seen: Seen) -> Answer:
        form = {k: v[-1] for k, v in parse_qs(seen.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return Answer(400, {"error": "unsupported_grant_type"})
        basic = seen.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
            return Answer(401, {"error": "invalid_client"})
        token, ttl = self._issue()
        return Answer(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": form.get("scope")}
        )
