"""What a compiled flow is made of, and what its steps see while they run.

A step's action gets a `StepRun`: the run's evaluation context (the same dict its `when:`
conditions read: `record`, `key`, `previous`, `steps`, `signals`, `error`, `now`, `run`) and
the services of the worker (state store, adapters, broker). It returns its output (a JSON
object, kept as `steps.<name>`) or `Wait(signal)` to park the run; it raises `TransientError`
to be retried and anything else — `FlowFailure`, `PermanentError`, `MappingError` — to fail the
step, which makes the flow compensate.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from middleware.errors import IsthmusError, MappingError
from middleware.mapping import CompiledMapping, MappingChain, MappingContext, to_json_ready, validate_output
from middleware.mapping.paths import Getter, make_getter, split_path

if TYPE_CHECKING:
    from middleware.adapter import Adapter
    from middleware.broker.base import OutgoingMessage
    from middleware.store.base import Store

Predicate = Callable[[Any], bool]

# Roots of the evaluation context: what conditions, templates and inline fields may read.
CONTEXT_ROOTS = ("record", "key", "previous", "steps", "signals", "error", "now", "run")


class FlowFailure(IsthmusError):
    """A step decided the run cannot go on (`kind: fail`, or a plugin): the flow compensates.

    `code` is short and machine-readable (`out_of_stock`), `reason` says why in words; both
    reach `error.code` / `error.reason` of the run's context, e.g. for a status to the CRM."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class Wait:
    """Returned by a step that parks the run until `signal` arrives (and satisfies its condition)."""

    signal: str


class FlowServices(Protocol):
    """What the worker lends a flow's steps."""

    @property
    def store(self) -> Store: ...

    @property
    def mapping_context(self) -> MappingContext: ...

    def adapter(self, system: str) -> Adapter: ...

    def publish(self, messages: list[OutgoingMessage]) -> None: ...


@dataclass
class StepRun:
    """One execution of one step; plugins get this as their second argument."""

    flow: str
    key: str
    run_id: str
    step: str
    correlation_id: str
    context: dict[str, Any]
    services: FlowServices

    @property
    def store(self) -> Store:
        return self.services.store

    def adapter(self, system: str) -> Adapter:
        return self.services.adapter(system)

    @property
    def idempotency_key(self) -> str:
        """Stable for this step of this run: what writes send as their Idempotency-Key."""
        return f"flow:{self.flow}:{self.run_id}:{self.step}"


class StepAction(Protocol):
    def run(self, step: StepRun) -> dict[str, Any] | Wait: ...


@dataclass
class CompiledStep:
    name: str
    kind: str
    action: StepAction
    when: Predicate | None = None
    compensate: CompiledStep | None = None
    rule: str | None = None  # the rule that added it, if any
    location: str = ""


@dataclass
class CompiledFlow:
    """A flow ready to run: steps in order (rules already placed), compensations, error handlers."""

    name: str
    description: str
    file: str
    key_path: str
    key: Getter
    when: Predicate | None
    on_new_version: str
    signals: dict[str, Getter]
    steps: list[CompiledStep]
    on_error: list[CompiledStep]
    by_name: dict[str, CompiledStep] = field(default_factory=dict)  # every step, compensations included

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]


class Template:
    """Text with `{path}` placeholders read from the context (`{steps.stock.summary}`); `{{` is `{`.

    Checked at load (paths, no format specs); a missing value renders as nothing."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[str, Getter | None]] = []
        for literal, name, spec, conversion in string.Formatter().parse(text):
            if literal:
                self.parts.append((literal, None))
            if name is None:
                continue
            if spec or conversion:
                raise ValueError(f"placeholder {{{name}}} takes no format or conversion; write {{path}}")
            if not name:
                raise ValueError("empty placeholder {}; write {path}, e.g. {record.order_no}, or {{ for a brace")
            split_path(name)
            self.parts.append((name, make_getter(name)))

    @property
    def paths(self) -> list[str]:
        return [text for text, getter in self.parts if getter is not None]

    def render(self, context: dict[str, Any]) -> str:
        return "".join(text if getter is None else _text(getter(context)) for text, getter in self.parts)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@dataclass
class RecordBuilder:
    """Builds the record a step writes, emits or passes as parameters, from the run's context.

    Either a context path (`from:`, default `record`) run through mapping files (`mappings:`),
    or inline `fields:` in the mapping language over the whole context (plus `{template: ..}`
    entries), validated against a canonical `entity:` when one is named."""

    label: str
    source: Getter | None = None
    source_path: str = "record"
    chain: CompiledMapping | MappingChain | None = None
    inline: CompiledMapping | None = None
    templates: dict[str, Template] = field(default_factory=dict)
    model: type[BaseModel] | None = None

    def build(self, context: dict[str, Any], mapping_context: MappingContext | None) -> dict[str, Any] | None:
        if self.source is None:  # inline fields and templates
            raw: dict[str, Any] = {}
            if self.inline is not None:
                mapped = self.inline.apply(context, mapping_context)
                if mapped is None:
                    return None
                raw = mapped
            for name, template in self.templates.items():
                raw[name] = template.render(context)
            return validate_output(self.model, raw, self.label)
        value = self.source(context)
        if not isinstance(value, dict):
            what = "nothing" if value is None else f"a {type(value).__name__}"
            raise MappingError(f"{self.source_path!r} is {what}, not an object", mapping=self.label)
        if self.chain is None:
            return to_json_ready(value)  # type: ignore[no-any-return]
        return self.chain.apply_validated(value, mapping_context)
