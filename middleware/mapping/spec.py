"""The shape of a mapping file as pydantic models (unknown keys are errors, with hints).

Only the fixed parts are modelled here; the `fields:` block is polymorphic (a path, a field
spec, a list of item blocks or an `each:` block) and is walked by the compiler, which uses
`FieldSpec` and `EachSpec` for the mapping-shaped entries.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAPPING_ID_PATTERN = r"^[a-z0-9_]+$"

# YAML reads `on_missing: null` as None, which means the same as the text "null".
OnMissing = Literal["omit", "null"] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class XrefSpec(_Strict):
    from_: str = Field(alias="from", description="'system:entity:id', e.g. crm:customer:C-1")
    to: str = Field(description="'system:id' (or 'system:entity:id'), e.g. erp:A-7")


class ExampleSpec(_Strict):
    name: str = Field(description="What the example shows.")
    input: dict[str, Any] = Field(description="The source record.")
    expected: dict[str, Any] | None = Field(default=None, description="The mapped output.")
    skipped: bool = Field(default=False, description="True when the mapping's `when:` must skip the input.")
    error: str | None = Field(default=None, description="Text the MappingError must contain.")
    match: Literal["exact", "subset"] = Field(
        default="exact", description="exact: output equals expected; subset: expected keys must match."
    )
    xrefs: list[XrefSpec] = Field(default_factory=list, description="Cross-references known to the example.")


class MappingFileSpec(_Strict):
    mapping: str = Field(pattern=MAPPING_ID_PATTERN, description="Unique id, [a-z0-9_]+.")
    description: str = Field(default="", description="What the mapping does.")
    source: str = Field(description="Canonical entity name or '<system>.<entity>'.")
    target: str = Field(description="Canonical entity name or '<system>.<entity>'.")
    when: dict[str, Any] | None = Field(default=None, description="Apply only when this condition holds.")
    on_missing: OnMissing = Field(
        default="omit",
        description="omit (default): a field whose source path is absent from the record is left out of the "
        "output; null: it is written as null (clears the target field). Fields may say otherwise.",
    )
    fields: dict[str, Any] = Field(min_length=1, description="Target path → field spec.")
    examples: list[ExampleSpec] = Field(default_factory=list, description="Input → expected output pairs.")


class FieldSpec(_Strict):
    from_: str | list[str] | None = Field(default=None, alias="from", description="Source path(s).")
    const: Any = Field(default=None, description="A fixed value.")
    index: int | None = Field(default=None, description="Position in the `each:` list, starting here.")
    transform: str | None = Field(default=None, description="Pipe of transforms, e.g. 'trim | upper'.")
    values: dict[str, Any] | None = Field(default=None, description="Value map: source value → target value.")
    otherwise: Any = Field(default=None, description="Value for anything not in `values`.")
    default: Any = Field(default=None, description="Used when the result is missing, null or empty text.")
    required: bool = Field(default=False, description="Fail the record when the result is missing.")
    optional: bool = Field(default=False, description="A missing xref gives null instead of a retry.")
    when: dict[str, Any] | None = Field(default=None, description="Map this field only when this holds.")
    on_missing: OnMissing = Field(
        default="omit", description="omit: an absent source leaves the field out; null: it is written as null."
    )


class EachSpec(_Strict):
    each: str = Field(description="Source list path.")
    fields: dict[str, Any] = Field(min_length=1, description="Fields of each output item, read from each source item.")
    when: dict[str, Any] | None = Field(default=None, description="Keep only source items for which this holds.")
    merge_key: str | None = Field(
        default=None,
        description="Item field that identifies an item in the target: a write merges its items into the "
        "target's list by this key instead of replacing the list (items it does not carry are kept).",
    )
    on_missing: OnMissing = Field(
        default="omit", description="omit: an absent source list leaves the field out; null: it is written as []."
    )


FIELD_SPEC_KEYS = tuple(f.alias or n for n, f in FieldSpec.model_fields.items())
