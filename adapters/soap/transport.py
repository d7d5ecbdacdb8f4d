"""The HTTP side of the SOAP adapter: one pooled session under zeep, bounded and hardened.

zeep sends every call through `SoapTransport.post` and loads the WSDL and its imports
through `SoapTransport.load`; both read bodies in chunks under a size limit and a deadline
and refuse a DOCTYPE before zeep parses anything (see `hardening`). The session never
retries by itself (the worker decides), carries HTTP Basic credentials when configured
(WS-Security goes into the envelope instead, see `client`), and its secrets are registered
with the log masker. The HTTP status of the calling thread's last answer is kept, so a
fault or an unreadable answer can be classified and counted by it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from zeep.exceptions import TransportError
from zeep.transports import Transport

from adapters.shared.scrubber import ERROR_EXCERPT_CHARS as ERROR_EXCERPT_CHARS
from adapters.shared.scrubber import Scrubber as Scrubber
from adapters.soap.config import BasicAuth, SoapSystemConfig, WsSecurityAuth, is_url
from adapters.soap.hardening import (
    DoctypeRefused,
    ImportPolicy,
    ImportRefused,
    ResponseTooLarge,
    has_doctype,
    local_path,
    looks_like_xml,
    read_file_limited,
    read_limited,
    refuse_doctype,
)
from middleware.observability import prepare_adapter_metrics
from middleware.observability.logmask import register_secret
from middleware.redact import mask_url_credentials

ERROR_BODY_CHARS = 2000


def secret_values(config: SoapSystemConfig) -> list[str]:
    """Every string that must never appear in a log line or an error message."""
    found: list[str] = []
    if isinstance(config.auth, BasicAuth | WsSecurityAuth):
        found.append(config.auth.password.get_secret_value())
    found.extend(config.headers.values())
    return [s for s in found if len(s) >= 4]


def build_session(config: SoapSystemConfig, system: str) -> requests.Session:
    """A session with a pool of `max_connections`, HTTP Basic auth if configured, and no retries."""
    register_secret(*secret_values(config))
    prepare_adapter_metrics(system)
    session = requests.Session()
    pool = HTTPAdapter(pool_connections=4, pool_maxsize=config.max_connections, max_retries=0)
    session.mount("http://", pool)
    session.mount("https://", pool)
    session.headers.update({"User-Agent": "isthmus-soap"})
    session.headers.update(config.headers)
    if isinstance(config.auth, BasicAuth):
        session.auth = HTTPBasicAuth(config.auth.username, config.auth.password.get_secret_value())
    session.trust_env = False  # proxies from the environment would surprise a loopback integration
    return session


class SoapTransport(Transport):  # type: ignore[misc]
    """zeep's transport with size limits, deadlines, DOCTYPE refusal and an import policy."""

    def __init__(self, config: SoapSystemConfig, session: requests.Session) -> None:
        super().__init__(timeout=config.wsdl_timeout_s, operation_timeout=config.timeout_s, session=session)
        self.session.headers["User-Agent"] = "isthmus-soap"  # zeep's constructor set its own
        self.session.adapters.pop("file://", None)  # zeep mounts one; a WSDL could aim calls at local files
        self.config = config
        self.policy = ImportPolicy(config.wsdl, config.wsdl_imports)
        self._local = threading.local()

    @property
    def last_status(self) -> int | None:
        """HTTP status of this thread's last call (None: no answer, e.g. a timeout)."""
        return getattr(self._local, "status", None)

    def forget_status(self) -> None:
        self._local.status = None

    def post(self, address: str, message: Any, headers: dict[str, str]) -> requests.Response:
        """One call. Error statuses whose body is no SOAP envelope become zeep TransportErrors."""
        self._local.status = None
        if not is_url(address):
            raise requests.exceptions.InvalidSchema(f"refusing to call {address!r}: only http:// and https://")
        timeout = self.config.timeout_s
        started = time.monotonic()
        response = self.session.post(
            address, data=message, headers=headers, timeout=(timeout, timeout), stream=True, allow_redirects=False
        )
        try:
            status = response.status_code
            self._local.status = status
            what = f"the answer of {mask_url_credentials(address)} (HTTP {status})"
            try:
                body = read_limited(response, self.config.max_response_bytes, started + timeout, what)
            except ResponseTooLarge:
                if status >= 400:  # an oversized error page: its status says enough
                    raise TransportError(f"HTTP {status}", status_code=status) from None
                raise
        finally:
            response.close()
        if status >= 300 and (not looks_like_xml(body) or has_doctype(body) or status in (401, 403)):
            # e.g. an HTML error page from a proxy: classified by its status, never parsed
            raise TransportError(f"HTTP {status}", status_code=status, content=body[:ERROR_BODY_CHARS])
        refuse_doctype(body, f"the answer of {mask_url_credentials(address)}")
        response._content = body
        response._content_consumed = True
        return response

    def load(self, url: str) -> bytes:
        """The WSDL or one of its imports, under the import policy and size limit; no DOCTYPE."""
        if not url:
            raise ValueError("No url given to load")
        self.policy.check(url)
        limit = self.config.max_wsdl_bytes
        if is_url(url):
            started = time.monotonic()
            follow = self.policy.is_wsdl(url)  # an import may not redirect past the policy
            response = self.session.get(url, timeout=self.config.wsdl_timeout_s, stream=True, allow_redirects=follow)
            try:
                if response.is_redirect:
                    raise ImportRefused(f"{url} (redirected to {response.headers.get('Location')})", self.policy.mode)
                response.raise_for_status()
                content = read_limited(response, limit, started + self.config.wsdl_timeout_s, f"document {url}")
            finally:
                response.close()
        else:
            content = read_file_limited(local_path(url), limit, f"document {url}")
        if has_doctype(content):
            raise DoctypeRefused(f"document {url}")
        return content
