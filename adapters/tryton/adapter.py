"""The Tryton adapter: a reader and a writer over one logged-in JSON-RPC session.

Selected by `type: tryton` in `isthmus.yaml`; configured by `TrytonSystemConfig`. The
session is shared by reads, writes and `check`, logs in on first use and again when the
server ends it, and never retries a call by itself (the worker decides). The password and
session token never appear in errors or logs.

A Channel Adapter (enterprise integration patterns): the reader is a Polling Consumer of
`write_date`, the writer the producing end, and `call` a Messaging Gateway to Tryton's sale
workflow for flow steps (a `Caller`, see adapters/tryton/operations.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.tryton.check import entity_permissions, server_version
from adapters.tryton.config import TrytonSystemConfig
from adapters.tryton.operations import OPERATIONS, TrytonOperations
from adapters.tryton.reader import TrytonReader
from adapters.tryton.rpc import TrytonRpc
from adapters.tryton.writer import TrytonWriter
from middleware.adapter import Capability, CheckResult
from middleware.errors import PermanentError, TransientError


class TrytonAdapter:
    """Tryton ERP over JSON-RPC (see `adapters.tryton.config` for the settings)."""

    config_model: ClassVar[type[TrytonSystemConfig]] = TrytonSystemConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {"read", "read_one", "stored_form", "start_watermark", "write", "call"}
    )
    operations: ClassVar[Mapping[str, str]] = OPERATIONS  # what flows may `call` (see operations.py)

    def __init__(self, name: str, config: TrytonSystemConfig | dict[str, object]) -> None:
        self.name = name
        self.config = config if isinstance(config, TrytonSystemConfig) else TrytonSystemConfig.model_validate(config)
        self.rpc = TrytonRpc(
            self.config.url,
            self.config.database,
            self.config.username,
            self.config.password.get_secret_value(),
            language=self.config.language,
            timeout_s=self.config.timeout_s,
            max_connections=self.config.max_connections,
            system=name,
        )
        self._reader = TrytonReader(name, self.config, self.rpc)
        self._writer = TrytonWriter(name, self.config, self.rpc)
        self._operations = TrytonOperations(self.rpc, name)

    def reader(self) -> TrytonReader:
        return self._reader

    def writer(self) -> TrytonWriter:
        return self._writer

    def call(self, operation: str, arguments: dict[str, Any], correlation_id: str = "") -> dict[str, Any]:
        """Run one of `operations` (a flow's `call` step, see `middleware.adapter.Caller`).

        Tryton's JSON-RPC has no place for a correlation id; the flow run logs it with the step.
        """
        return self._operations.call(operation, arguments)

    def check(self) -> CheckResult:
        """Log in and read the user's company, the server's version and the user's access rights per model
        (`ir.model.access`) for what the entities read and write (see adapters/tryton/check.py)."""
        try:
            self.rpc.login()
            context = self.rpc.context
        except TransientError as exc:
            return CheckResult(self.name, reachable=False, detail=str(exc))
        except PermanentError as exc:
            reachable = exc.status is not None
            return CheckResult(self.name, reachable=reachable, authenticated=False if reachable else None,
                               detail=str(exc))
        company = context.get("company.rec_name") or context.get("company")
        extra: dict[str, Any] = {"company": context.get("company"), "language": context.get("language")}
        try:
            series = server_version(self.rpc, self.config.url, self.config.timeout_s)
            extra["version"] = f"Tryton {series}" if series else None
            extra["permissions"], extra["access"] = entity_permissions(self.config, self.rpc)
        except (TransientError, PermanentError) as exc:
            extra["problems"] = [f"could not read the version or access rights: {exc}"]
        return CheckResult(
            self.name,
            reachable=True,
            authenticated=True,
            detail=f"logged in to {self.config.database!r} as {self.config.username!r}; company {company!r}",
            extra=extra,
        )

    def close(self) -> None:
        self._writer.close()
        self.rpc.close()
