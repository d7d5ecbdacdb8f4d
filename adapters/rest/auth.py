"""Credentials that change while the adapter runs: OAuth2 client credentials and login tokens.

Static credentials (bearer, basic, API key) are fixed headers of the session (see
`transport.auth_headers`) and cost nothing per request. Token flows get their header from a
`TokenCredentials` per request: the first request fetches a token, a token close to its
expiry is renewed before it is used, and a 401 from the API renews it once (`renew`); one
thread fetches while the others wait for its token, so a burst of 401s costs one renewal.

What callers may rely on: `headers()` returns the header to send or raises a
`DeliveryError` — `AuthenticationFailed` (permanent) when the token endpoint refuses the
credentials, `TransientError` when it is down or throttles. Tokens are registered as
secrets the moment they arrive: no log line or error message shows one.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter

from adapters.rest.budget import RequestBudget
from adapters.rest.config import LoginAuth, OAuth2ClientCredentialsAuth, RestSystemConfig
from adapters.rest.payload import dig
from adapters.rest.transport import Scrubber, classify_exception, classify_status, parse_retry_after, response_text
from middleware.errors import PermanentError, TransientError
from middleware.observability.logmask import register_secret

log = structlog.get_logger("isthmus.adapters.rest")

_KEEP_OLD_TOKENS = 3  # the latest tokens stay masked in error excerpts after a renewal


class AuthenticationFailed(PermanentError):
    """The system refused the configured credentials (token endpoint or login answered 4xx)."""


class Credentials:
    """Static credentials: already in the session's headers, nothing to add or renew."""

    renewable = False

    def headers(self) -> dict[str, str]:
        return {}

    def renew(self, used: Mapping[str, str]) -> bool:
        """After a 401: get fresh credentials; True if a retry with `headers()` is worth it."""
        return False

    def close(self) -> None:
        """Release what the credentials hold (the token flows' HTTP session)."""


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


class TokenCredentials(Credentials):
    """A token from an OAuth2 token endpoint or a login request, renewed before it expires."""

    renewable = True

    def __init__(
        self,
        system: str,
        config: RestSystemConfig,
        scrubber: Scrubber,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        auth = config.auth
        assert isinstance(auth, OAuth2ClientCredentialsAuth | LoginAuth)
        self.system = system
        self.auth = auth
        self.timeout_s = config.timeout_s
        self.scrubber = scrubber
        target = auth.token_url if isinstance(auth, OAuth2ClientCredentialsAuth) else auth.path
        self.url = target if target.startswith(("http://", "https://")) else config.base_url + target
        # token requests to the system itself count against its budget; an identity provider's do not
        self.budget = budget if same_origin(self.url, config.base_url) else None
        self.header = "Authorization" if isinstance(auth, OAuth2ClientCredentialsAuth) else auth.header
        self.prefix = "Bearer " if isinstance(auth, OAuth2ClientCredentialsAuth) else auth.prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._renew_at: float | None = None
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.mount("http://", HTTPAdapter(max_retries=0))
        self._session.mount("https://", HTTPAdapter(max_retries=0))
        self._session.headers.update({"Accept": "application/json", "User-Agent": "isthmus-rest"})
        self._configured_secrets = list(scrubber.secrets)
        self._recent: deque[str] = deque(maxlen=_KEEP_OLD_TOKENS)
        self.fetches = 0  # tokens fetched so far (for logs and tests)

    @property
    def what(self) -> str:
        return "token request" if isinstance(self.auth, OAuth2ClientCredentialsAuth) else "login"

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._value is None or (self._renew_at is not None and self._clock() >= self._renew_at):
                self._fetch()
            assert self._value is not None
            return {self.header: self._value}

    def renew(self, used: Mapping[str, str]) -> bool:
        with self._lock:
            if self._value is None or used.get(self.header) == self._value:
                self._fetch()  # else another thread renewed it since `used` was sent
        return True

    def close(self) -> None:
        self._session.close()

    def _fetch(self) -> None:
        auth = self.auth
        kwargs: dict[str, Any] = {"timeout": self.timeout_s, "allow_redirects": False}
        if isinstance(auth, OAuth2ClientCredentialsAuth):
            method = "POST"
            form = {"grant_type": "client_credentials", **auth.params}
            if auth.scope:
                form["scope"] = auth.scope
            secret = auth.client_secret.get_secret_value()
            if auth.client_auth == "basic":  # RFC 6749 §2.3.1: form-urlencoded, then HTTP Basic
                kwargs["auth"] = (quote(auth.client_id, safe=""), quote(secret, safe=""))
            else:
                form.update({"client_id": auth.client_id, "client_secret": secret})
            kwargs["data"] = form
            token_path: str = "access_token"
            expires_path: str | None = "expires_in"
            fallback_ttl = auth.default_expires_s
        else:
            method = auth.method
            body = {auth.username_field: auth.username, auth.password_field: auth.password.get_secret_value()}
            body.update(auth.extra_fields)
            kwargs["json" if auth.body_format == "json" else "data"] = body
            token_path, expires_path, fallback_ttl = auth.token_path, auth.expires_in_path, auth.token_ttl_s
        if self.budget is not None:
            self.budget.acquire()
        try:
            response = self._session.request(method, self.url, **kwargs)
        except requests.RequestException as exc:
            error = f"{self.what} to {self.url} failed: {self.scrubber.describe(exc)}"
            if classify_exception(exc) == "transient":
                raise TransientError(error, system=self.system) from None
            raise PermanentError(error, system=self.system) from None
        status = response.status_code
        outcome = classify_status(status)
        if outcome != "ok":
            error = f"{self.what} {self.url} → {status}: {self.scrubber.excerpt(response_text(response))}"
            if outcome == "transient":
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise TransientError(error, system=self.system, status=status, retry_after=retry_after)
            raise AuthenticationFailed(
                f"authentication failed: {error}; check the credentials", system=self.system, status=status
            )
        try:
            answer = json.loads(response.content)
        except ValueError:
            raise AuthenticationFailed(
                f"{self.what} {self.url} → {status}: the answer is not JSON", system=self.system, status=status
            ) from None
        token = dig(answer, token_path)
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed(
                f"{self.what} {self.url} → {status}: no token at {token_path!r} in the answer",
                system=self.system,
                status=status,
            )
        lifetime = _seconds(dig(answer, expires_path)) if expires_path else None
        if lifetime is None:
            lifetime = fallback_ttl
        value = self.prefix + token
        register_secret(token, value)
        self._recent.append(token)
        self.scrubber.secrets[:] = self._configured_secrets + list(self._recent)
        self._value = value
        margin = min(self.auth.refresh_before_s, lifetime / 2) if lifetime is not None else 0.0
        self._renew_at = None if lifetime is None else self._clock() + lifetime - margin
        self.fetches += 1
        log.info("auth_token_renewed", system=self.system, flow=self.auth.type, expires_in_s=lifetime)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def build_credentials(
    system: str, config: RestSystemConfig, scrubber: Scrubber, budget: RequestBudget | None
) -> Credentials:
    if isinstance(config.auth, OAuth2ClientCredentialsAuth | LoginAuth):
        return TokenCredentials(system, config, scrubber, budget)
    return Credentials()
