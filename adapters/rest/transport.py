"""The HTTP side of the REST adapter: one pooled session, auth headers, failure classification.

Retries are the worker's decision, so the session never retries by itself (urllib3 retries
off); this module only says what a response or an exception *is*: ok, transient (worth
retrying: connection errors, timeouts, 408, 429, 5xx) or permanent (other 4xx).

Every call is counted here, where it happens: `isthmus_adapter_calls_total{system,
operation, status, outcome}` and `isthmus_adapter_call_seconds{system, operation}` — reads
through the session's mounted `MeteredHTTPAdapter`, writes in `send_direct`. The session's
secrets are registered with the log masker when it is built.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict

from adapters.rest.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    LoginAuth,
    OAuth2ClientCredentialsAuth,
    RestSystemConfig,
)
from adapters.shared.scrubber import ERROR_EXCERPT_CHARS as ERROR_EXCERPT_CHARS
from adapters.shared.scrubber import Scrubber as Scrubber
from middleware.observability import observe_adapter_call, prepare_adapter_metrics
from middleware.observability.logmask import register_secret

TRANSIENT_STATUSES = frozenset({408, 425, 429})
Outcome = Literal["ok", "transient", "permanent"]


def auth_headers(config: RestSystemConfig) -> dict[str, str]:
    """The fixed auth headers of static credentials; token flows add theirs per request (`auth.py`)."""
    auth = config.auth
    if isinstance(auth, BearerAuth):
        return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
    if isinstance(auth, BasicAuth):
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    if isinstance(auth, ApiKeyAuth):
        return {auth.header: auth.value.get_secret_value()}
    return {}


def secret_values(config: RestSystemConfig) -> list[str]:
    """Every string that must never appear in a log line or an error message."""
    auth = config.auth
    found: list[str] = []
    if isinstance(auth, BearerAuth):
        found.append(auth.token.get_secret_value())
    elif isinstance(auth, BasicAuth):
        found.append(auth.password.get_secret_value())
    elif isinstance(auth, ApiKeyAuth):
        found.append(auth.value.get_secret_value())
    elif isinstance(auth, OAuth2ClientCredentialsAuth):
        found.append(auth.client_secret.get_secret_value())
    elif isinstance(auth, LoginAuth):
        found.append(auth.password.get_secret_value())
    found.extend(auth_headers(config).values())
    found.extend(config.headers.values())
    return [s for s in found if len(s) >= 4]


class MeteredHTTPAdapter(HTTPAdapter):
    """The session's connection pool; counts and times each call made through the session.

    GET, HEAD and OPTIONS count as `read`, anything else as `write`. The body is read inside the
    timing (requests would read it right after anyway), so a slow page download shows.
    """

    def __init__(self, system: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.system = system
        prepare_adapter_metrics(system)

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        operation = "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"
        started = time.perf_counter()
        try:
            response = super().send(request, *args, **kwargs)
            if not kwargs.get("stream", False):
                response.content  # noqa: B018 - preload inside the timing
        except requests.RequestException as exc:
            observe_adapter_call(
                self.system, operation, failure_status(exc), classify_exception(exc), time.perf_counter() - started
            )
            raise
        status = response.status_code
        observe_adapter_call(
            self.system, operation, str(status), classify_status(status), time.perf_counter() - started
        )
        return response


def build_session(config: RestSystemConfig, system: str = "") -> requests.Session:
    """A session with a pool of `max_connections`, auth and static headers, and no retries.

    `system` names the system in the call metrics. The auth secrets and static header
    values are registered with the log masker: no log line will carry them.
    """
    register_secret(*secret_values(config))
    session = requests.Session()
    pool = MeteredHTTPAdapter(system, pool_connections=4, pool_maxsize=config.max_connections, max_retries=0)
    session.mount("http://", pool)
    session.mount("https://", pool)
    session.headers.update({"Accept": "application/json", "User-Agent": "isthmus-rest"})
    session.headers.update(config.headers)
    session.headers.update(auth_headers(config))
    session.trust_env = False  # proxies from the environment would surprise a loopback integration
    return session


@dataclass
class HttpReply:
    """What a write needs from a response: status, headers and the body, read in full."""

    status_code: int
    headers: CaseInsensitiveDict[str]
    content: bytes
    encoding: str | None = None


def send_direct(
    session: requests.Session,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
) -> HttpReply:
    """One write through the urllib3 pool that the session's HTTPAdapter owns.

    Why not `session.request`: per call it re-merges session settings, environment, cookies
    and hooks and builds a full `Response`, and the worker is CPU-bound on exactly this call.
    `isthmus bench` measures both (8 at a time into the sample ERP): `rest_writer_writes_per_s`
    (about 930 in one run here) against `requests_session_writes_per_s` (about 660).
    Writes need none of that bookkeeping: auth and static headers are
    fixed per system (merged here), there are no cookies, redirects are not followed, retries
    are the worker's. Pool size, keep-alive and TLS settings stay those of the session.
    Errors are raised as the matching `requests` exceptions so callers classify them one way.
    """
    adapter = session.get_adapter(url)
    system = getattr(adapter, "system", "")
    started = time.perf_counter()
    try:
        reply = _urlopen(adapter, method, url, body, headers, session.headers, timeout)
    except requests.RequestException as exc:
        elapsed = time.perf_counter() - started
        observe_adapter_call(system, "write", failure_status(exc), classify_exception(exc), elapsed)
        raise
    observe_adapter_call(
        system, "write", str(reply.status), classify_status(reply.status), time.perf_counter() - started
    )
    return HttpReply(reply.status, CaseInsensitiveDict(reply.headers), reply.data or b"")


def _urlopen(
    adapter: Any,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    session_headers: Any,
    timeout: float,
) -> Any:
    """One request on the adapter's urllib3 pool; urllib3 errors raised as `requests` ones."""
    parsed = urllib3.util.parse_url(url)
    merged = dict(session_headers)
    merged.update(headers)
    try:
        pool = adapter.poolmanager.connection_from_url(url)
        return pool.urlopen(
            method,
            parsed.request_uri,
            body=body,
            headers=merged,
            retries=False,
            redirect=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            preload_content=True,
        )
    except urllib3.exceptions.LocationValueError as exc:
        raise requests.exceptions.InvalidURL(str(exc)) from exc
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of the timeout error
        raise requests.exceptions.ConnectionError(str(exc)) from exc
    except urllib3.exceptions.TimeoutError as exc:
        raise requests.exceptions.Timeout(str(exc)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from exc


def classify_status(status: int) -> Outcome:
    if status < 400:
        return "ok"
    if status in TRANSIENT_STATUSES or status >= 500:
        return "transient"
    return "permanent"


def failure_status(exc: requests.RequestException) -> str:
    """The `status` label of a call that got no HTTP answer."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if classify_exception(exc) == "permanent":
        return "invalid_request"
    return "connection_error"


def classify_exception(exc: requests.RequestException) -> Outcome:
    """Connection errors and timeouts are transient; a malformed URL or header is permanent."""
    permanent = (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.InvalidHeader,
        requests.exceptions.URLRequired,
    )
    return "permanent" if isinstance(exc, permanent) else "transient"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if absent/invalid."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return max(0.0, (moment - current).total_seconds())


def response_text(response: requests.Response | HttpReply) -> str:
    try:
        return response.content.decode(response.encoding or "utf-8", errors="replace")
    except (LookupError, requests.RequestException):
        return ""
