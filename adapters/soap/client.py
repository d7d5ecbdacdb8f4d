"""The zeep client of one SOAP system: the WSDL loaded once, one port bound, calls classified.

The WSDL is loaded on first use, not when the adapter is built: a worker whose ERP is down
at start still starts, and its calls fail as transient until the WSDL loads (a WSDL that is
refused or names no such service/port fails as permanent). Once loaded, the binding is kept
for the life of the adapter. Each call returns plain JSON-ready data (see `payload`) or
raises `TransientError`/`PermanentError` with a message that names the operation and never
a secret; every call is counted in `isthmus_adapter_calls_total{system, operation, status,
outcome}` like REST calls are.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import requests
import structlog
import zeep
import zeep.exceptions
from zeep.wsse.username import UsernameToken

from adapters.soap.config import SoapSystemConfig, WsSecurityAuth
from adapters.soap.faults import Failure, classify
from adapters.soap.hardening import zeep_settings
from adapters.soap.payload import plain
from adapters.soap.transport import Scrubber, SoapTransport
from middleware.errors import PermanentError, TransientError
from middleware.observability import observe_adapter_call
from middleware.problems import did_you_mean
from middleware.redact import mask_url_credentials

log = structlog.get_logger("isthmus.adapters.soap")

CallKind = Literal["read", "write"]


class AuthenticationFailed(PermanentError):
    """The system refused the credentials (a WS-Security fault, HTTP 401/403)."""


@dataclass
class Binding:
    """The loaded WSDL and the one port calls go to."""

    client: zeep.Client
    proxy: Any  # zeep.proxy.ServiceProxy
    service: str
    port: str
    address: str
    operations: dict[str, Any]  # operation name → zeep operation


class SoapClient:
    """Loads the WSDL lazily, binds the configured service/port and calls its operations."""

    def __init__(self, system: str, config: SoapSystemConfig, session: requests.Session, scrubber: Scrubber) -> None:
        self.system = system
        self.config = config
        self.scrubber = scrubber
        self.transport = SoapTransport(config, session)
        self.settings = zeep_settings(config.strict, forbid_external=config.wsdl_imports == "none")
        auth = config.auth
        self.wsse = (
            UsernameToken(auth.username, auth.password.get_secret_value(), use_digest=auth.digest)
            if isinstance(auth, WsSecurityAuth)
            else None
        )
        self.wsdl_label = mask_url_credentials(config.wsdl)
        self._binding: Binding | None = None
        self._lock = threading.Lock()

    # ----- the WSDL -------------------------------------------------------------------------

    def binding(self) -> Binding:
        """The bound port, loading the WSDL first if needed; raises Transient/PermanentError."""
        bound = self._binding
        if bound is not None:
            return bound
        with self._lock:
            if self._binding is None:
                self._binding = self._load()
                log.info(
                    "wsdl_loaded",
                    system=self.system,
                    service=self._binding.service,
                    port=self._binding.port,
                    operations=len(self._binding.operations),
                )
            return self._binding

    def _load(self) -> Binding:
        what = f"loading the WSDL {self.wsdl_label}"
        self.transport.forget_status()
        try:
            client = zeep.Client(self.config.wsdl, wsse=self.wsse, transport=self.transport, settings=self.settings)
        except Exception as exc:  # every failure is classified, none escapes unnamed
            raise self._error(self._classify(exc, what, loading=True)) from None
        services = client.wsdl.services
        if not services:
            raise PermanentError(f"the WSDL {self.wsdl_label} defines no service", system=self.system)
        service_name = self.config.service or next(iter(services))
        service = services.get(service_name)
        if service is None:
            raise PermanentError(
                f"the WSDL {self.wsdl_label} has no service {service_name!r}; {did_you_mean(service_name, services)}",
                system=self.system,
            )
        if not service.ports:
            raise PermanentError(f"service {service_name!r} has no port", system=self.system)
        port_name = self.config.port or next(iter(service.ports))
        port = service.ports.get(port_name)
        if port is None:
            raise PermanentError(
                f"service {service_name!r} has no port {port_name!r}; {did_you_mean(port_name, service.ports)}",
                system=self.system,
            )
        address = self.config.endpoint or port.binding_options.get("address") or ""
        if not address:
            raise PermanentError(
                f"port {port_name!r} has no soap:address; set systems.{self.system}.endpoint", system=self.system
            )
        proxy = client.create_service(port.binding.name, address)
        return Binding(client, proxy, service_name, port_name, address, dict(port.binding.all()))

    # ----- calls ----------------------------------------------------------------------------

    def call(
        self,
        operation: str,
        arguments: dict[str, Any],
        kind: CallKind,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call `operation` with keyword `arguments`; the result as plain data."""
        bound = self.binding()
        if operation not in bound.operations:
            raise PermanentError(
                f"operation {operation!r} is not in port {bound.port!r} of the WSDL; "
                f"{did_you_mean(operation, bound.operations)}",
                system=self.system,
            )
        settings: AbstractContextManager[Any] = (
            bound.client.settings(extra_http_headers=headers) if headers else nullcontext()
        )
        self.transport.forget_status()
        started = time.perf_counter()
        try:
            with settings:
                result = bound.proxy[operation](**arguments)
        except Exception as exc:  # classified below; nothing escapes unnamed
            failure = self._classify(exc, operation)
            if kind == "write" and failure.answer_refused:
                failure.message += " — the call was sent, so the system may have applied it: check before replaying"
            observe_adapter_call(
                self.system, kind, _status_label(failure, exc), failure.outcome, time.perf_counter() - started
            )
            raise self._error(failure) from None
        status = self.transport.last_status
        observe_adapter_call(self.system, kind, str(status or 200), "ok", time.perf_counter() - started)
        return plain(result)

    def _classify(self, exc: BaseException, what: str, loading: bool = False) -> Failure:
        return classify(
            exc,
            what=what,
            system=self.system,
            rules=self.config.fault_rules,
            status=self.transport.last_status,
            scrubber=self.scrubber,
            timeout_s=self.config.wsdl_timeout_s if loading else self.config.timeout_s,
            loading=loading,
        )

    def _error(self, failure: Failure) -> TransientError | PermanentError:
        if failure.auth:
            return AuthenticationFailed(failure.message, system=self.system, status=failure.status)
        if failure.outcome == "transient":
            return TransientError(failure.message, system=self.system, status=failure.status)
        return PermanentError(failure.message, system=self.system, status=failure.status)

    # ----- what check() reports ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Services, ports and operations of the loaded WSDL, and which configured calls exist."""
        bound = self.binding()
        services: dict[str, Any] = {}
        for service_name, service in bound.client.wsdl.services.items():
            services[service_name] = {
                port_name: {
                    "address": port.binding_options.get("address"),
                    "operations": sorted(port.binding.all()),
                }
                for port_name, port in service.ports.items()
            }
        configured: dict[str, Any] = {}
        problems: list[str] = []
        for role, operation in self.config.configured_operations().items():
            found = operation in bound.operations
            configured[role] = {"operation": operation, "found": found}
            if not found:
                problems.append(
                    f"{role}: operation {operation!r} is not in port {bound.port!r}; "
                    f"{did_you_mean(operation, bound.operations)}"
                )
                continue
            arguments = operation_arguments(bound.operations[operation])
            if arguments is not None:
                configured[role]["arguments"] = arguments
                for name in self._configured_arguments(role):
                    if name not in arguments:
                        problems.append(
                            f"{role}: operation {operation!r} takes no argument {name!r}; "
                            f"it takes: {', '.join(arguments) or 'none'}"
                        )
        return {
            "wsdl": self.wsdl_label,
            "service": bound.service,
            "port": bound.port,
            "endpoint": mask_url_credentials(bound.address),
            "services": services,
            "configured": configured,
            "problems": problems,
        }

    def _configured_arguments(self, role: str) -> list[str]:
        """Top-level argument names the settings of `role` ('customer.read', …) pass."""
        if role == "check_call":
            assert self.config.check_call is not None
            return list(self.config.check_call.arguments)
        entity_name, _, kind = role.rpartition(".")
        entity = self.config.entities[entity_name]
        if kind == "read":
            assert entity.read is not None
            spec = entity.read
            return [*spec.arguments, *(a for a in (spec.since_argument, spec.limit_argument) if a)]
        assert entity.write is not None
        call = getattr(entity.write, kind)
        names = list(call.arguments)
        if call.record_argument:
            names.append(call.record_argument)
        if call.target_id_argument:
            names.append(call.target_id_argument.split(".")[0])
        return names


def operation_arguments(operation: Any) -> list[str] | None:
    """Names of an operation's input arguments, when the WSDL makes them plain (None if not)."""
    try:
        elements = operation.input.body.type.elements
        return [str(name) for name, _element in elements]
    except (AttributeError, TypeError):
        return None


def _status_label(failure: Failure, exc: BaseException) -> str:
    if failure.status is not None:
        return str(failure.status)
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.RequestException):
        return "connection_error" if failure.outcome == "transient" else "invalid_request"
    return "refused" if failure.outcome == "permanent" else "error"
