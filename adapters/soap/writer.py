"""Writing mapped records over SOAP, concurrently but in order per record.

Each request becomes one operation call: `update` when the cross-reference knows the
target's id (passed as `target_id_argument`), else `create`; or `upsert` for both. Calls
about the same record share a *lane* (the message's idempotency key without its `@version`)
and run one after another in the order given, so an older version never overtakes a newer
one, and a second version of a record created earlier in the same batch updates what the
first created instead of creating it again. Different records run up to `concurrency` at
once. Every call carries the HTTP headers `Idempotency-Key` (the message's key) and
`X-Correlation-Id`, for the ERPs or gateways that honour them.

An answer refused after the call was sent (too large, a DTD) is permanent, and its message
says that the ERP may have applied the write: an operator checks before replaying.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from adapters.shared.documents import dig
from adapters.shared.lanes import LanePool
from adapters.soap.client import SoapClient
from adapters.soap.config import OperationCall, SoapSystemConfig
from adapters.soap.payload import set_path
from middleware.adapter import WriteRequest, WriteResult
from middleware.errors import DeliveryError, TransientError


class SoapWriter:
    """Writes the entities of one SOAP system that have `write:` settings.

    The producing end of the SOAP Channel Adapter: one operation call per request, faults
    classified at the edge (see `adapters.soap.faults`).
    """

    def __init__(self, system: str, config: SoapSystemConfig, client: SoapClient) -> None:
        self.system = system
        self.config = config
        self.client = client
        self._lanes = LanePool(config.concurrency, thread_name_prefix=f"soap-{system}")

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        try:
            self.client.binding()  # once per batch: a WSDL that does not load fails every request at once
        except DeliveryError as exc:
            return [_failed(exc) for _ in requests]
        results: list[WriteResult | None] = [None] * len(requests)
        lanes: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            identity, at, _version = request.key.rpartition("@")
            lanes.setdefault(f"{request.entity}:{identity if at else request.key}", []).append(index)

        def run_lane(lane: list[int]) -> None:
            created_id: str | None = None
            for index in lane:
                request = requests[index]
                if created_id is not None and request.target_id is None:
                    request = replace(request, target_id=created_id)
                result = self.write_one(request)
                results[index] = result
                if result.outcome == "ok" and request.target_id is None and result.target_id:
                    created_id = result.target_id

        self._lanes.run(lanes.values(), run_lane)
        return [r if r is not None else WriteResult("transient", error="not attempted") for r in results]

    def write_one(self, request: WriteRequest) -> WriteResult:
        entity = self.config.entities.get(request.entity)
        spec = entity.write if entity is not None else None
        if spec is None:
            return WriteResult("permanent", error=f"system {self.system!r} cannot write entity {request.entity!r}")
        if spec.upsert is not None:
            call = spec.upsert
        elif request.target_id is None:
            assert spec.create is not None
            call = spec.create
        elif spec.update is not None:
            call = spec.update
        else:
            return WriteResult(
                "permanent",
                target_id=request.target_id,
                error=f"the record already exists in {self.system!r} as {request.target_id!r} and "
                f"entities.{request.entity}.write has no 'update' operation",
            )
        arguments = _arguments(call, request)
        headers = {"Idempotency-Key": request.key}
        if request.correlation_id:
            headers["X-Correlation-Id"] = request.correlation_id
        try:
            result = self.client.call(call.operation, arguments, "write", headers)
        except DeliveryError as exc:
            return _failed(exc)
        return WriteResult("ok", target_id=_target_id(result, call, request), status=self.client.transport.last_status)

    def close(self) -> None:
        self._lanes.close()


def _failed(exc: DeliveryError) -> WriteResult:
    if isinstance(exc, TransientError):
        return WriteResult("transient", error=str(exc), status=exc.status, retry_after=exc.retry_after)
    return WriteResult("permanent", error=str(exc), status=exc.status)


def _arguments(call: OperationCall, request: WriteRequest) -> dict[str, Any]:
    """The operation's keyword arguments: the record (whole or spread), the target id, constants."""
    record = request.record
    arguments: dict[str, Any] = {call.record_argument: dict(record)} if call.record_argument else dict(record)
    if call.target_id_argument and request.target_id is not None:
        head = call.target_id_argument.split(".")[0]
        if isinstance(arguments.get(head), dict):
            arguments[head] = dict(arguments[head])  # never change the caller's record
        set_path(arguments, call.target_id_argument, request.target_id)
    arguments.update(call.arguments)
    return arguments


def _target_id(result: Any, call: OperationCall, request: WriteRequest) -> str | None:
    if call.id_path is None:
        return request.target_id
    found = dig(result, call.id_path)
    if found is None or found == "" or isinstance(found, dict | list):
        return request.target_id
    return str(found)
