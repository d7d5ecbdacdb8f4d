"""How routes reach flows: a Writer-compatible `FlowRunner`, and the worker's wiring of it.

A route whose target is `{flow: NAME}` maps its messages as usual (or passes the payload as it
is when it names no mappings) and hands each record to a `FlowRunner` as a write: the runner
starts or resumes the run (or, for `{flow: NAME, signal: S}`, delivers the signal) and answers
ok, transient or permanent like any writer, so the route's retry, dead-letter, idempotency and
metrics work for flows unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from middleware.adapter import Adapter, WriteRequest, WriteResult
from middleware.broker.base import Broker, OutgoingMessage
from middleware.errors import MappingError, PermanentError, TransientError
from middleware.mapping import StoreMappingContext
from middleware.store.base import Store

from .engine import FlowEngine
from .loader import FlowSet, build_flows
from .steps import Call, Ensure, Write

if TYPE_CHECKING:
    from middleware.config import LoadedConfig, RouteConfig

log = structlog.get_logger("isthmus.flows")

MapFunction = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class FlowRunner:
    """A Writer whose writes start (or signal) runs of one flow; one result per request, in order."""

    def __init__(self, engine: FlowEngine, signal: str | None = None) -> None:
        self.engine = engine
        self.signal = signal

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        results: list[WriteResult] = []
        for request in requests:
            try:
                if self.signal is None:
                    self.engine.start(request.record, request.key, request.correlation_id)
                else:
                    self.engine.signal(self.signal, request.record, request.key)
                results.append(WriteResult("ok"))
            except TransientError as exc:
                results.append(WriteResult("transient", error=str(exc), status=exc.status, retry_after=exc.retry_after))
            except (PermanentError, MappingError) as exc:
                results.append(WriteResult("permanent", error=str(exc)))
            except Exception as exc:  # a bug (or a store outage) must not stop the route
                log.exception("flow_runner_failed", flow=self.engine.flow.name, key=request.key)
                results.append(WriteResult("transient", error=f"{type(exc).__name__}: {exc}"))
        return results

    def close(self) -> None:
        """Nothing to release: the adapters belong to the worker."""


class WorkerFlowServices:
    """The worker's store, adapters and broker, as flows' steps use them (thread-safe)."""

    def __init__(self, store: Store, adapter: Callable[[str], Adapter], new_broker: Callable[[], Broker]) -> None:
        self.store = store
        self.mapping_context = StoreMappingContext(store)
        self._adapter = adapter
        self._new_broker = new_broker
        self._lock = threading.Lock()
        self._local = threading.local()

    def adapter(self, system: str) -> Adapter:
        with self._lock:
            return self._adapter(system)

    def publish(self, messages: list[OutgoingMessage]) -> None:
        broker = getattr(self._local, "broker", None)
        if broker is None:  # each route thread publishes on its own broker handle
            broker = self._local.broker = self._new_broker()
        broker.publish(messages)


class FlowWiring:
    """Builds flow runners for a worker's routes; flows are compiled on first need, once."""

    def __init__(
        self,
        config: LoadedConfig,
        store: Store,
        adapter: Callable[[str], Adapter],
        new_broker: Callable[[], Broker],
    ) -> None:
        self.config = config
        self.services = WorkerFlowServices(store, adapter, new_broker)
        self._flows: FlowSet | None = None
        self.engines: dict[str, FlowEngine] = {}

    @property
    def flows(self) -> FlowSet:
        if self._flows is None:
            self._flows = build_flows(self.config)
            for flow in self._flows.values():  # open the adapters now, not from the route threads
                for step in flow.by_name.values():
                    action = step.action
                    if isinstance(action, Ensure | Write):
                        self.services.adapter(action.target.system)
                    elif isinstance(action, Call):
                        self.services.adapter(action.system)
        return self._flows

    def engine(self, name: str) -> FlowEngine:
        if name not in self.engines:
            self.engines[name] = FlowEngine(self.flows[name], self.services)
        return self.engines[name]

    def writer(self, route: RouteConfig) -> FlowRunner:
        assert route.to.flow is not None
        return FlowRunner(self.engine(route.to.flow), route.to.signal)

    def mapper(self, route: RouteConfig) -> tuple[MapFunction, str]:
        """The route's mapping chain, or the payload as it is when it names none."""
        if route.mappings:
            from middleware.runtime.chains import build_route_mapper

            return build_route_mapper(self.config, route.mappings, self.services.store)
        return _as_is, "as-is"


def _as_is(payload: dict[str, Any]) -> dict[str, Any] | None:
    return payload
