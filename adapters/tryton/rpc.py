"""Tryton's JSON-RPC: one pooled HTTP session, login and renewal, the value codec, errors.

Protocol (trytond 8): `POST <url>/<database>/rpc/` with `{"id", "method", "params"}`.
`common.db.login` with `[login, {"password": …}, language]` answers `[user_id, token, …]`;
later calls send `Authorization: Session base64(login:user_id:token)`. Model methods are
`model.<model>.<method>` and take the user's context (`res.user.get_preferences`) as their
last parameter. Decimals, dates and datetimes travel as `{"__class__": "Decimal", …}`
objects (the codec below); Tryton's datetimes are naive UTC.

Failures are classified here, where they are seen: no answer, 5xx, 429, 503, a lock
conflict or a concurrency error are transient; a rejected record (`UserError`,
`UserWarning`), an unknown method (403) and anything else the server raised are permanent.
A 401 means the session ended (expired, logged out, server restarted): the client logs in
again once and repeats the call.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter

from adapters.shared.scrubber import Scrubber
from middleware.errors import PermanentError, TransientError
from middleware.observability import observe_adapter_call, prepare_adapter_metrics
from middleware.observability.logmask import register_secret

log = structlog.get_logger("isthmus.adapters.tryton")

ERROR_EXCERPT_CHARS = 400
_TRANSIENT_MARKERS = ("database is locked", "OperationalError", "TimeOutException", "could not serialize", "deadlock")


# ----- codec --------------------------------------------------------------------------------


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dtime):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"a {type(value).__name__} cannot be sent to Tryton")


def _decode_object(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind is None:
        return obj
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        return datetime(
            obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"], obj["microsecond"]
        )
    if kind == "date":
        return date(obj["year"], obj["month"], obj["day"])
    if kind == "time":
        return dtime(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def encode(payload: Any) -> bytes:
    """JSON bytes with Tryton's objects for Decimal, date, datetime (as naive UTC), time, bytes."""
    return json.dumps(payload, default=_encode_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(body: bytes | str) -> Any:
    """Parse a Tryton answer, turning its `__class__` objects back into Python values."""
    return json.loads(body, object_hook=_decode_object)


def utc(moment: datetime) -> datetime:
    """A Tryton (naive UTC) datetime as an aware one."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ----- errors -------------------------------------------------------------------------------


class TrytonUserError(PermanentError):
    """Tryton refused the call for a reason about the data (a `UserError` or `UserWarning`)."""


def describe_error(error: Any) -> tuple[str, bool]:
    """(readable message, transient?) of a JSON-RPC `error` member.

    Tryton sends `[kind, args]` for its own exceptions (`["UserError", [message,
    description, domain]]`) and `[str(exception), traceback]` for anything else.
    """
    if isinstance(error, list | tuple) and error:
        kind = error[0]
        args = error[1] if len(error) > 1 else None
        if kind in ("UserError", "UserWarning"):
            parts = [str(p) for p in (args if isinstance(args, list | tuple) else [args]) if isinstance(p, str) and p]
            if kind == "UserWarning" and parts:
                parts = parts[1:] or parts  # the first is the warning's name
            return f"{kind}: " + " — ".join(parts), False
        if kind == "ConcurrencyException":
            return f"ConcurrencyException: {args}", True
        if kind == "LoginException":
            return "LoginException: the server asks for more login parameters", False
        text = str(kind)
        return text, any(marker in text for marker in _TRANSIENT_MARKERS)
    text = str(error)
    return text, any(marker in text for marker in _TRANSIENT_MARKERS)


# ----- client -------------------------------------------------------------------------------


@dataclass
class Session:
    user_id: int
    token: str
    header: str
    context: dict[str, Any]


class TrytonRpc:
    """A logged-in JSON-RPC client for one Tryton database; safe to share between threads.

    `call(method, *params)` adds nothing; `model(model, method, *params)` appends the
    user's context. Login happens on first use and again whenever the server answers 401.
    """

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        password: str,
        *,
        language: str = "en",
        timeout_s: float = 60.0,
        max_connections: int = 4,
        system: str = "tryton",
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self.database = database
        self.username = username
        self._password = password
        # a server may echo a request (the login carries the password) in its error answer
        self._scrubber = Scrubber([password] if password else [])
        self.language = language
        self.timeout_s = timeout_s
        self.system = system
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._session: Session | None = None
        self.logins = 0
        self.server_time: datetime | None = None  # from the last answer's Date header
        self._server_time_at = 0.0
        register_secret(password)
        prepare_adapter_metrics(system)
        self.http = requests.Session()
        self.http.trust_env = False
        pool = HTTPAdapter(pool_connections=1, pool_maxsize=max_connections, max_retries=0)
        self.http.mount("http://", pool)
        self.http.mount("https://", pool)
        self.http.headers.update({"Content-Type": "application/json", "User-Agent": "isthmus-tryton"})

    # -- session ------------------------------------------------------------------------------

    @property
    def context(self) -> dict[str, Any]:
        """The user's context (company, language, ...), logging in first if needed."""
        return dict(self._ensure_session().context)

    def login(self) -> Session:
        """Log in (again) and load the user's context; PermanentError on bad credentials."""
        with self._lock:
            return self._login_locked()

    def _login_locked(self) -> Session:
        try:
            result = self._post("common.db.login", [self.username, {"password": self._password}, self.language], None)
        except PermanentError as exc:
            if exc.status in (401, 403):
                raise PermanentError(
                    f"Tryton login as {self.username!r} on database {self.database!r} refused "
                    "(wrong user or password?)",
                    system=self.system,
                    status=exc.status,
                ) from None
            if exc.status == 404:
                raise PermanentError(
                    f"Tryton has no database {self.database!r} at {self.endpoint}", system=self.system, status=404
                ) from None
            raise
        if not isinstance(result, list) or len(result) < 2:
            raise PermanentError(
                f"unexpected login answer from Tryton: {self._excerpt(repr(result))}", system=self.system
            )
        user_id, token = int(result[0]), str(result[1])
        register_secret(token)
        raw = f"{self.username}:{user_id}:{token}".encode()
        header = "Session " + base64.b64encode(raw).decode("ascii")
        register_secret(header.split(" ", 1)[1])
        self._scrubber.secrets.extend([token, header.split(" ", 1)[1]])
        context = self._post("model.res.user.get_preferences", [True, {}], header)
        self._session = Session(user_id, token, header, context if isinstance(context, dict) else {})
        self.logins += 1
        log.info("tryton_logged_in", system=self.system, database=self.database, user_id=user_id)
        return self._session

    def _excerpt(self, text: str) -> str:
        """`text` cut short for an error message, the password and session token blanked out."""
        return self._scrubber.excerpt(text, ERROR_EXCERPT_CHARS)

    def _ensure_session(self) -> Session:
        session = self._session
        if session is not None:
            return session
        with self._lock:
            return self._session or self._login_locked()

    def logout(self) -> None:
        session = self._session
        if session is None:
            return
        with contextlib.suppress(TransientError, PermanentError):
            self._post("common.db.logout", [], session.header)
        self._session = None

    def close(self) -> None:
        self.logout()
        self.http.close()

    # -- calls --------------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """One authenticated call; renews the session once on 401."""
        session = self._ensure_session()
        try:
            return self._post(method, list(params), session.header)
        except PermanentError as exc:
            if exc.status != 401:
                raise
        with self._lock:
            if self._session is session or self._session is None:
                log.info("tryton_session_renewed", system=self.system, method=method)
                self._session = None
                session = self._login_locked()
            else:
                session = self._session  # another thread renewed it meanwhile
        return self._post(method, list(params), session.header)

    def model(self, model: str, method: str, *params: Any, context: dict[str, Any] | None = None) -> Any:
        """`model.<model>.<method>(*params, context)` with the user's context (plus `context`)."""
        ctx = dict(self._ensure_session().context)
        if context:
            ctx.update(context)
        return self.call(f"model.{model}.{method}", *params, ctx)

    def now(self) -> datetime:
        """The server's clock (from its last Date header, advanced locally), or ours."""
        if self.server_time is None:
            return datetime.now(UTC)
        return self.server_time + timedelta(seconds=time.monotonic() - self._server_time_at)

    def _post(self, method: str, params: list[Any], auth: str | None) -> Any:
        operation = "read" if _is_read(method) else "write"
        body = encode({"id": next(self._ids), "method": method, "params": params})
        headers = {"Authorization": auth} if auth else None
        started = time.perf_counter()
        try:
            response = self.http.post(self.endpoint, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            status = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            observe_adapter_call(self.system, operation, status, "transient", time.perf_counter() - started)
            raise TransientError(
                f"Tryton {method} failed: {type(exc).__name__}: {self._excerpt(str(exc))}", system=self.system
            ) from None
        elapsed = time.perf_counter() - started
        self._note_server_time(response.headers.get("Date"))
        status_code = response.status_code
        if status_code != 200:
            transient = status_code >= 500 or status_code in (408, 425, 429)
            observe_adapter_call(
                self.system, operation, str(status_code), "transient" if transient else "permanent", elapsed
            )
            text = self._excerpt(response.text)
            message = f"Tryton {method} → HTTP {status_code}: {text}"
            if status_code == 403 and auth is not None:
                message += " (method not allowed over RPC, or access denied)"
            if transient:
                retry_after = response.headers.get("Retry-After")
                raise TransientError(
                    message,
                    system=self.system,
                    status=status_code,
                    retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                )
            raise PermanentError(message, system=self.system, status=status_code)
        try:
            answer = decode(response.content)
        except ValueError:
            observe_adapter_call(self.system, operation, "200", "permanent", elapsed)
            raise PermanentError(
                f"Tryton {method}: answer is not JSON: {self._excerpt(response.text)}", system=self.system
            ) from None
        if isinstance(answer, dict) and "error" in answer:
            message, transient = describe_error(answer["error"])
            observe_adapter_call(self.system, operation, "200", "transient" if transient else "permanent", elapsed)
            text = f"Tryton {method}: {self._excerpt(message)}"
            if transient:
                raise TransientError(text, system=self.system)
            raise TrytonUserError(text, system=self.system)
        observe_adapter_call(self.system, operation, "200", "ok", elapsed)
        return answer.get("result") if isinstance(answer, dict) else answer

    def _note_server_time(self, header: str | None) -> None:
        if not header:
            return
        try:
            moment = parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        self.server_time = utc(moment)
        self._server_time_at = time.monotonic()


_READ_METHODS = ("search", "search_read", "search_count", "read", "fields_get", "get_preferences", "login")


def _is_read(method: str) -> bool:
    return method.rsplit(".", 1)[-1] in _READ_METHODS
