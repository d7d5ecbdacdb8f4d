"""The shape of a flow file, as pydantic models (`extra="forbid"`: a misspelt key is an error with a hint).

Steps are checked in two passes: `StepCommon` for what every step has (name, kind, when,
compensate), then the model of its kind. Conditions and inline `fields:` stay plain data here;
the loader compiles them with the mapping engine's own compiler.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SignalSpec(_Strict):
    key: str = Field(description="Path of the run's key in the signal's payload, e.g. order_id.")
    description: str = ""


class TargetRef(_Strict):
    system: str = Field(description="A system under `systems:` whose adapter can write.")
    entity: str = Field(description="Entity of that system, with `write:` settings.")


class XrefSpec(_Strict):
    system: str = Field(description="System of the record the target record stands for, e.g. crm.")
    entity: str = Field(description="Its entity, e.g. customer.")
    id: str = Field(description="Context path of its id, e.g. record.customer_no.")


class RecordSpec(_Strict):
    """A record built from the context: a path through mapping files, or inline fields."""

    from_: str | None = Field(default=None, alias="from", description="Context path read (default: record).")
    mappings: list[str] = Field(default_factory=list, description="Mapping ids applied in order to it.")
    fields: dict[str, Any] | None = Field(
        default=None, description="Instead: fields in the mapping language over the context ({template: ..} too)."
    )
    entity: str | None = Field(default=None, description="With fields: the canonical entity they must make.")


class StepCommon(_Strict):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, description="Unique in the flow; its output is steps.<name>.")
    kind: str = Field(description="ensure, write, call, wait_for, emit, fail, or a plugin's kind.")
    description: str = ""
    when: dict[str, Any] | None = Field(default=None, description="Run the step only when this condition holds.")
    compensate: dict[str, Any] | None = Field(
        default=None, description="A step that undoes this one when a later step fails (call, write, emit, ...)."
    )


class _StepBase(_Strict):
    name: str
    kind: str
    description: str = ""
    when: dict[str, Any] | None = None
    compensate: dict[str, Any] | None = None


class EnsureStep(_StepBase):
    target: TargetRef
    xref: XrefSpec
    create: RecordSpec | None = Field(default=None, description="How to create it when the xref knows none.")


class WriteStep(_StepBase, RecordSpec):
    target: TargetRef
    xref: XrefSpec | None = Field(default=None, description="Update the linked record, and link what was written.")


class CallStep(_StepBase):
    system: str
    operation: str
    params: dict[str, Any] = Field(default_factory=dict, description="Mapping-language fields over the context.")


class WaitForStep(_StepBase):
    signal: str = Field(description="A signal declared under `signals:`.")
    until: dict[str, Any] | None = Field(default=None, description="Condition the signal must meet (else it waits).")


class EmitStep(_StepBase, RecordSpec):
    type: str = Field(description="Message type, e.g. order_status.changed.")


class FailStep(_StepBase):
    code: str = Field(default="failed", pattern=NAME_PATTERN, description="error.code, e.g. out_of_stock.")
    reason: str = Field(description="error.reason; {path} placeholders read the context.")


class PluginStep(_StepBase):
    params: dict[str, Any] = Field(default_factory=dict, description="Mapping-language fields over the context.")


STEP_MODELS: dict[str, type[_StepBase]] = {
    "ensure": EnsureStep,
    "write": WriteStep,
    "call": CallStep,
    "wait_for": WaitForStep,
    "emit": EmitStep,
    "fail": FailStep,
}


class RuleSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique in the flow; steps.<name>.applies says if it fired.")
    description: str = ""
    when: dict[str, Any] | None = Field(default=None, description="Condition over the context.")
    changes: list[str] = Field(
        default_factory=list,
        description="Record paths: the rule fires only when one differs from the previous run's record.",
    )
    before: str | None = Field(default=None, description="Step the rule's steps run before.")
    after: str | None = Field(default=None, description="Step the rule's steps run after (default: at the end).")
    steps: list[dict[str, Any]] = Field(min_length=1, description="Steps run when the rule fires.")


class FlowFileSpec(_Strict):
    flow: str = Field(pattern=NAME_PATTERN, description="Flow name, unique; routes name it in `to: {flow: ..}`.")
    description: str = ""
    key: str = Field(description="Path of the run's business key in the input record, e.g. order_no.")
    when: dict[str, Any] | None = Field(default=None, description="Inputs that do not match start no run.")
    on_new_version: Literal["ignore", "restart"] = Field(
        default="ignore",
        description="A different input for a key that already has a run: ignore it (noted on the trail), or "
        "start a new run once the current one has finished (`previous` is then the old input).",
    )
    signals: dict[str, SignalSpec] = Field(default_factory=dict, description="Messages that resume a parked run.")
    steps: list[dict[str, Any]] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list)
    on_error: list[dict[str, Any]] = Field(
        default_factory=list, description="Steps run after the compensations when a step failed (e.g. a status)."
    )

    @field_validator("signals")
    @classmethod
    def _signal_names(cls, value: dict[str, SignalSpec]) -> dict[str, SignalSpec]:
        import re

        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"signal name {name!r} must be lower case letters, digits and _")
        return value
