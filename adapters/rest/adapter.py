"""The REST adapter: a reader and a writer over one pooled HTTP session.

Selected by `type: rest` in `isthmus.yaml`; configured by `RestSystemConfig`. The session
is shared by reads, writes and `check`, never retries by itself (the worker decides), and
sends the configured auth on every request. So are the credentials (a token flow renews its
token for all of them at once) and the system's request budget: the worker opens one
adapter per system, so every source and route of that system in a process draws on one
budget. Secrets never appear in errors or logs.

A Channel Adapter (enterprise integration patterns): its reader is a Polling Consumer (see
`adapters.rest.reader`), its writer the producing end that classifies every answer as ok,
transient or permanent.
"""

from __future__ import annotations

from typing import ClassVar

from adapters.rest.auth import build_credentials
from adapters.rest.budget import RequestBudget
from adapters.rest.check import check_system
from adapters.rest.config import RestSystemConfig
from adapters.rest.reader import RestReader
from adapters.rest.transport import Scrubber, build_session, secret_values
from adapters.rest.writer import RestWriter
from middleware.adapter import Capability, CheckResult


class RestAdapter:
    """HTTP/JSON system adapter (see `adapters.rest.config` for the settings)."""

    config_model: ClassVar[type[RestSystemConfig]] = RestSystemConfig
    # read_one: GET item_path (or a filtered list read); no stored form: an API returns what it was sent
    capabilities: ClassVar[frozenset[Capability]] = frozenset({"read", "read_one", "read_item", "write"})

    def __init__(self, name: str, config: RestSystemConfig | dict[str, object]) -> None:
        self.name = name
        self.config = config if isinstance(config, RestSystemConfig) else RestSystemConfig.model_validate(config)
        self.session = build_session(self.config, name)
        self.scrubber = Scrubber(secret_values(self.config))
        budget = self.config.request_budget
        self.budget = RequestBudget(name, budget) if budget is not None else None
        self.credentials = build_credentials(name, self.config, self.scrubber, self.budget)
        self._reader = RestReader(
            name, self.config, self.session, self.scrubber, credentials=self.credentials, budget=self.budget
        )
        self._writer = RestWriter(
            name, self.config, self.session, self.scrubber, credentials=self.credentials, budget=self.budget
        )

    def reader(self) -> RestReader:
        return self._reader

    def writer(self) -> RestWriter:
        return self._writer

    def check(self) -> CheckResult:
        """Connect without moving data: reachability, authentication, API version, permissions.

        See `adapters.rest.check.check_system`: GETs and configured probes only, never a write.
        """
        return check_system(self)

    def close(self) -> None:
        self._writer.close()
        self.credentials.close()
        self.session.close()
