"""Config models reconciliation owns: `reconcile: {<route>: {...}}` in isthmus.yaml.

Pure pydantic: `middleware.config` builds the root model from it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from middleware.schedule.cron import parse_schedule


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReconcileConfig(Strict):
    """Reconciliation of one route: compare its source and target record by record (middleware/reconcile/engine.py).

    Without `every` or `cron` the route is reconciled on demand only (`isthmus reconcile`).
    """

    every: str | None = Field(
        default=None, description="The worker reconciles the route at this interval, e.g. 15m, 1h30m, 90s."
    )
    cron: str | None = Field(
        default=None,
        description="The worker reconciles the route at these times (5-field cron, UTC), e.g. '0 * * * *'.",
    )
    heal: bool = Field(
        default=False, description="Scheduled runs re-emit the missing and different records onto the route."
    )
    source: str | None = Field(
        default=None,
        description="Name of the source (or webhook endpoint) whose records the route receives; default: the "
        "one source that emits what the route consumes.",
    )
    ignore_fields: list[str] = Field(
        default_factory=list,
        description="Dotted paths of mapped fields left out of the comparison, e.g. contact_mechanisms or "
        "addresses.street (list positions are not written).",
    )
    key_field: str | None = Field(
        default=None,
        description="Field of the mapped record that names its target record without a cross-reference (a "
        "business key, e.g. code or reference): a target record with the same value that no link points at is "
        "linked to the source record instead of being reported missing. Default: the target entity's "
        "write.key_field, when its adapter has one.",
    )
    orphans: Literal["all", "linked", "none"] = Field(
        default="all",
        description="Target records reported as orphaned: all (linked to a deleted source record, or not "
        "linked at all), linked (only the former), none.",
    )
    unlinked_match: dict[str, str] = Field(
        default_factory=dict,
        description="Only target records whose fields match these glob patterns count as unlinked orphans, "
        "e.g. {code: 'C-*'}: the records this route could have made. Default: every unlinked record.",
    )

    @model_validator(mode="after")
    def _schedule(self) -> ReconcileConfig:
        if self.every is not None or self.cron is not None:
            parse_schedule(self.every, self.cron)  # ScheduleError is a ValueError: reported with its place
        return self
