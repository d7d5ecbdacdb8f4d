"""Running the `examples:` of mapping files (`isthmus test`) and previewing records.

An example passes when the mapping's validated, JSON-ready output equals `expected`
(`match: subset`: every expected key matches, extra output keys are allowed), or the
mapping skips the input for `skipped: true`, or raises a MappingError containing `error:`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from middleware.errors import IsthmusError
from middleware.mapping.compiler import CompiledMapping, MappingChain
from middleware.mapping.context import MappingContext, StaticMappingContext
from middleware.mapping.jsonready import to_json_ready
from middleware.mapping.spec import ExampleSpec

ContextFactory = Callable[[CompiledMapping, ExampleSpec], MappingContext]


@dataclass
class ExampleResult:
    mapping: str
    name: str
    passed: bool
    location: str = ""
    differences: list[str] = field(default_factory=list)
    actual: Any = None

    def render(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.mapping}: {self.name}"
        if self.passed:
            return head
        where = f" ({self.location})" if self.location else ""
        return head + where + "".join(f"\n    {line}" for line in self.differences)


def example_context(mapping: CompiledMapping, example: ExampleSpec) -> MappingContext:
    """The default context of an example: its own `xrefs:` and nothing else."""
    return StaticMappingContext([{"from": x.from_, "to": x.to} for x in example.xrefs])


def run_examples(mappings: Any, ctx_factory: ContextFactory | None = None) -> list[ExampleResult]:
    """Run every example of every mapping (a MappingSet, a dict or a list of mappings)."""
    items = list(mappings.values()) if hasattr(mappings, "values") else list(mappings)
    factory = ctx_factory or example_context
    results: list[ExampleResult] = []
    for mapping in items:
        for i, example in enumerate(mapping.examples):
            location = str(mapping.doc.locate(("examples", i))) if mapping.doc is not None else mapping.file
            results.append(run_example(mapping, example, factory(mapping, example), location))
    return results


def run_example(
    mapping: CompiledMapping, example: ExampleSpec, ctx: MappingContext, location: str = ""
) -> ExampleResult:
    result = ExampleResult(mapping.id, example.name, passed=False, location=location)
    try:
        actual = mapping.apply_validated(example.input, ctx)
    except IsthmusError as exc:
        if example.error is not None and example.error in str(exc):
            result.passed = True
        elif example.error is not None:
            result.differences = [f"expected an error containing {example.error!r}", f"got: {exc}"]
        else:
            result.differences = [f"the mapping raised {type(exc).__name__}: {exc}"]
        return result
    result.actual = actual
    if example.error is not None:
        result.differences = [f"expected an error containing {example.error!r}, got output {actual!r}"]
    elif example.skipped:
        result.passed = actual is None
        if not result.passed:
            result.differences = [f"expected the mapping to skip this input (when: false), got {actual!r}"]
    elif actual is None:
        result.differences = ["the mapping skipped this input (its when: is false); expected output"]
    else:
        expected = to_json_ready(example.expected)
        result.differences = diff(expected, actual, subset=example.match == "subset")
        result.passed = not result.differences
    return result


def diff(expected: Any, actual: Any, *, subset: bool = False, path: str = "") -> list[str]:
    """Field-by-field differences, one readable line each (empty when they match)."""
    label = path or "output"
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines: list[str] = []
        for key, want in expected.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                lines.append(f"{sub}: expected {want!r}, but the output has no such field")
            else:
                lines.extend(diff(want, actual[key], subset=subset, path=sub))
        if not subset:
            for key in actual:
                if key not in expected:
                    sub = f"{path}.{key}" if path else str(key)
                    lines.append(f"{sub}: not expected, but the output has {actual[key]!r}")
        return lines
    if isinstance(expected, list) and isinstance(actual, list):
        lines = []
        if len(expected) != len(actual):
            lines.append(f"{label}: expected {len(expected)} items, got {len(actual)}")
        for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
            lines.extend(diff(want, got, subset=subset, path=f"{path}[{i}]"))
        return lines
    if expected == actual and type(expected) is type(actual):
        return []
    if expected == actual and not isinstance(expected, bool) and not isinstance(actual, bool):
        return []
    return [f"{label}: expected {expected!r}, got {actual!r}"]


def preview(
    mapping: CompiledMapping | MappingChain,
    record: dict[str, Any],
    xrefs: dict[str, str] | list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """What the worker would write for `record`: apply_validated with inline xrefs."""
    return mapping.apply_validated(record, StaticMappingContext(xrefs))
