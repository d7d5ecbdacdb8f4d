"""The REST adapter: a reader and a writer over one pooled HTTP session.

Selected by `type: rest` in `isthmus.yaml`; configured by `RestSystemConfig`. The session
is shared by reads, writes and `check`, never retries by itself (the worker decides), and
sends the configured auth on every request. Secrets never appear in errors or logs.
"""

from __future__ import annotations

from typing import ClassVar

import requests

from adapters.rest.config import RestSystemConfig
from adapters.rest.reader import RestReader
from adapters.rest.transport import Scrubber, build_session, secret_values
from adapters.rest.writer import RestWriter
from middleware.adapter import CheckResult


class RestAdapter:
    """HTTP/JSON system adapter (see `adapters.rest.config` for the settings)."""

    config_model: ClassVar[type[RestSystemConfig]] = RestSystemConfig

    def __init__(self, name: str, config: RestSystemConfig | dict[str, object]) -> None:
        self.name = name
        self.config = config if isinstance(config, RestSystemConfig) else RestSystemConfig.model_validate(config)
        self.session = build_session(self.config, name)
        self.scrubber = Scrubber(secret_values(self.config))
        self._reader = RestReader(name, self.config, self.session, self.scrubber)
        self._writer = RestWriter(name, self.config, self.session, self.scrubber)

    def reader(self) -> RestReader:
        return self._reader

    def writer(self) -> RestWriter:
        return self._writer

    def check(self) -> CheckResult:
        """GET base_url (or health_path): reachable if anything answers HTTP; 401/403 → not authenticated.

        `authenticated` is True for a 2xx/3xx answer and None when the answer says nothing
        about credentials (e.g. 404 on a base URL that serves no page).
        """
        url = self.config.base_url + (self.config.health_path or "/")
        try:
            response = self.session.get(url, timeout=self.config.timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            return CheckResult(self.name, reachable=False, detail=self.scrubber.describe(exc))
        status = response.status_code
        authenticated = False if status in (401, 403) else (True if status < 400 else None)
        return CheckResult(
            self.name,
            reachable=True,
            authenticated=authenticated,
            detail=self.scrubber.excerpt(f"GET {url} → {status}"),
            extra={"status": status},
        )

    def close(self) -> None:
        self._writer.close()
        self.session.close()
