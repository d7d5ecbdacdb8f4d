"""The SOAP adapter: a reader and a writer over one zeep client and one pooled HTTP session.

Selected by `type: soap` in `isthmus.yaml`; configured by `SoapSystemConfig`. The WSDL is
loaded on first use (see `client`), the session never retries by itself (the worker
decides), and secrets never appear in errors or logs.

A Channel Adapter (enterprise integration patterns): the reader is a Polling Consumer of a
"changed since" operation, the writer the producing end that classifies SOAP faults.

Importing this module is light: the config load reaches `SoapAdapter.config_model` and
`capabilities` for every `type: soap` system, and must not pay for zeep and lxml; they are
imported when an adapter is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from adapters.soap.config import SoapSystemConfig
from middleware.adapter import Capability, CheckResult
from middleware.errors import DeliveryError, TransientError

if TYPE_CHECKING:
    from adapters.soap.reader import SoapReader
    from adapters.soap.writer import SoapWriter


class SoapAdapter:
    """SOAP system adapter (see `adapters.soap.config` for the settings)."""

    config_model: ClassVar[type[SoapSystemConfig]] = SoapSystemConfig
    # no read_one: a WSDL has no standard "get by id"; no stored form: the service returns what it was sent
    capabilities: ClassVar[frozenset[Capability]] = frozenset({"read", "write"})

    def __init__(self, name: str, config: SoapSystemConfig | dict[str, object]) -> None:
        from adapters.soap.client import SoapClient
        from adapters.soap.reader import SoapReader
        from adapters.soap.transport import Scrubber, build_session, secret_values
        from adapters.soap.writer import SoapWriter

        self.name = name
        self.config = config if isinstance(config, SoapSystemConfig) else SoapSystemConfig.model_validate(config)
        self.session = build_session(self.config, name)
        self.scrubber = Scrubber(secret_values(self.config))
        self.client = SoapClient(name, self.config, self.session, self.scrubber)
        self._reader = SoapReader(name, self.config, self.client)
        self._writer = SoapWriter(name, self.config, self.client)

    def reader(self) -> SoapReader:
        return self._reader

    def writer(self) -> SoapWriter:
        return self._writer

    def check(self) -> CheckResult:
        """Load the WSDL; report its services, ports and operations and whether the configured ones exist.

        `reachable` says the endpoint answered: the `check_call` operation when configured
        (which also proves the credentials: `authenticated` True or False), else any HTTP
        answer to a GET of the endpoint (`authenticated` False on 401/403, else None).
        `extra["problems"]` lists configured operations or arguments the WSDL lacks.
        """
        from adapters.soap.client import AuthenticationFailed

        try:
            description = self.client.describe()
        except DeliveryError as exc:
            return CheckResult(
                self.name,
                reachable=not (isinstance(exc, TransientError) and exc.status is None),  # it answered
                authenticated=False if isinstance(exc, AuthenticationFailed) else None,
                detail=f"WSDL not loaded: {exc}",
                extra={"wsdl": self.client.wsdl_label, "status": exc.status},
            )
        reachable, authenticated, probe = self._probe(description["endpoint"])
        problems: list[str] = description["problems"]
        found = sum(1 for c in description["configured"].values() if c["found"])
        summary = (
            f"WSDL {description['wsdl']}: service {description['service']}, port {description['port']}, "
            f"{len(self.client.binding().operations)} operations; {found} of {len(description['configured'])} "
            f"configured operations found; endpoint {description['endpoint']}: {probe}"
        )
        if problems:
            summary += "; problems: " + "; ".join(problems)
        return CheckResult(self.name, reachable, authenticated, detail=summary, extra=description)

    def _probe(self, endpoint: str) -> tuple[bool, bool | None, str]:
        import requests

        from adapters.soap.client import AuthenticationFailed

        call = self.config.check_call
        if call is not None:
            try:
                self.client.call(call.operation, dict(call.arguments), "read")
            except AuthenticationFailed as exc:
                return True, False, str(exc)
            except DeliveryError as exc:
                reachable = not isinstance(exc, TransientError) or exc.status is not None
                return reachable, None, str(exc)
            return True, True, f"{call.operation} answered"
        address = self.client.binding().address
        try:
            response = self.session.get(address, timeout=self.config.timeout_s, stream=True, allow_redirects=False)
        except requests.RequestException as exc:
            return False, None, f"not reachable: {self.scrubber.describe(exc)}"
        response.close()
        status = response.status_code
        return True, (False if status in (401, 403) else None), f"GET → HTTP {status}"

    def close(self) -> None:
        self._writer.close()
        self.session.close()
