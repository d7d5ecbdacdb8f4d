"""Structured conditions (`when:`), checked and compiled at load into predicates.

    {field: p, equals: v}        {field: p, not_equals: v}     {field: p, in: [a, b]}
    {field: p, exists: true}     {field: p, matches: "^C-"}    {field: p, gt|gte|lt|lte: 10}
    {field: id, linked: crm}     {field: id, not_linked: {to: crm, from: tryton, entity: sale}}
    {all: [c, ...]}              {any: [c, ...]}               {not: c}

`equals`, `not_equals` and `in` compare as text (`equals: 3` matches 3 and "3"; booleans as
true/false). `exists` means present and not null. Number comparisons and `matches` are false
for a missing or non-numeric / non-text value: a condition never fails a record.

`linked` / `not_linked` ask the cross-reference store (the mapping context, as `xref` does)
whether the record whose id is at `field` in system `from`, entity `entity` is linked to a
record in system `to`. `from` and `entity` default to the mapping's native source
(`source: tryton.sale`); a mapping from a canonical entity names them. E.g. skip status
updates for Tryton sales the CRM never created: `when: {field: id, linked: crm}`. A record
without an id, or a run without a context, counts as not linked. A route's own `when:`
(`routes[].when`) takes the same conditions on the message payload, and there `{linked: crm}`
without `field:` asks about the message's source record itself.

Predicates take `(record, ctx=None)`: `ctx` is the MappingContext (only links look at it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from middleware.errors import Problem
from middleware.mapping.paths import make_getter, split_path
from middleware.mapping.patterns import PatternError, compile_regex
from middleware.mapping.problemlog import ProblemLog
from middleware.problems import did_you_mean
from middleware.yamlsource import YamlDocument, YamlPath

Predicate = Callable[..., bool]  # (record, ctx=None) -> bool
PathCheck = Callable[[str, YamlPath], None]

COMBINATORS = ("all", "any", "not")
LINK_OPERATORS = ("linked", "not_linked")
OPERATORS = ("equals", "not_equals", "in", "exists", "matches", "gt", "gte", "lt", "lte", *LINK_OPERATORS)
LINK_KEYS = ("to", "from", "entity")
_SHAPES = (
    "{field: p, equals: v}, {field: p, in: [..]}, {field: p, exists: true}, {field: p, matches: regex}, "
    "{field: p, gt: 10}, {field: id, linked: crm}, {all: [..]}, {any: [..]}, {not: {..}}"
)


def key_text(value: Any) -> str | None:
    """The text a value is compared and looked up as (None stays None)."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def compile_condition(
    spec: Any,
    path: YamlPath,
    log: ProblemLog,
    check_path: PathCheck | None = None,
    source: tuple[str, str] | None = None,
    *,
    message_record: bool = False,
) -> Predicate:
    """A predicate (record, ctx=None) → bool; problems go to `log` (the returned predicate is then
    unusable). `source` is the (system, entity) that `linked:` defaults to. With `message_record`
    (a route's `when:`), `linked:` without `field:` asks about the message's own source record,
    which `ctx.source` names (a `RecordRef`)."""
    if not isinstance(spec, dict) or not spec:
        log.add("a condition must be a mapping", path, f"use one of {_SHAPES}")
        return _never
    combinators = [k for k in spec if k in COMBINATORS]
    if combinators:
        if len(spec) != 1:
            others = ", ".join(repr(k) for k in spec if k != combinators[0])
            log.add(
                f"{combinators[0]!r} cannot be combined with {others} in one condition",
                path,
                "nest them: {all: [{field: ..}, {field: ..}]}",
            )
            return _never
        name = combinators[0]
        inner = spec[name]
        if name == "not":
            test = compile_condition(inner, (*path, "not"), log, check_path, source, message_record=message_record)
            return lambda record, ctx=None: not test(record, ctx)
        if not isinstance(inner, list) or not inner:
            log.add(
                f"{name!r} takes a non-empty list of conditions",
                (*path, name),
                f"{name}: [{{field: ..}}, ..]",
            )
            return _never
        tests = tuple(
            compile_condition(c, (*path, name, i), log, check_path, source, message_record=message_record)
            for i, c in enumerate(inner)
        )
        if name == "all":
            return lambda record, ctx=None: all(t(record, ctx) for t in tests)
        return lambda record, ctx=None: any(t(record, ctx) for t in tests)

    ok = True
    for key in spec:
        if key not in OPERATORS and key != "field":
            log.add(
                f"unknown condition key {key!r}",
                (*path, key),
                did_you_mean(key, (*OPERATORS, *COMBINATORS, "field")),
                key=True,
            )
            ok = False
    operators = [k for k in spec if k in OPERATORS]
    if not ok:
        return _never
    if "field" not in spec and message_record and len(operators) == 1 and operators[0] in LINK_OPERATORS:
        return _link_condition(operators[0], spec[operators[0]], None, (*path, operators[0]), log, source)
    if "field" not in spec:
        log.add("condition has no 'field:'", path, f"use one of {_SHAPES}")
        return _never
    field_path = spec["field"]
    if not isinstance(field_path, str) or not field_path:
        log.add("'field:' must be a dotted source path", (*path, "field"), "e.g. field: billing.country")
        return _never
    try:
        split_path(field_path)
    except ValueError as exc:
        log.add(str(exc), (*path, "field"))
        return _never
    if check_path is not None:
        check_path(field_path, (*path, "field"))
    if len(operators) != 1:
        what = "no operator" if not operators else "more than one operator (" + ", ".join(operators) + ")"
        log.add(f"condition on {field_path!r} has {what}", path, "give exactly one of " + ", ".join(OPERATORS))
        return _never
    if not ok:
        return _never
    op = operators[0]
    operand = spec[op]
    get = make_getter(field_path)
    where = (*path, op)
    if op in LINK_OPERATORS:
        return _link_condition(op, operand, get, where, log, source)
    if op in ("equals", "not_equals"):
        if isinstance(operand, dict | list):
            log.add(
                f"{op!r} compares with one value, not a {type(operand).__name__}",
                where,
                "use 'in: [..]' for lists",
            )
            return _never
        wanted = key_text(operand)
        if op == "equals":
            return lambda record, ctx=None: key_text(get(record)) == wanted
        return lambda record, ctx=None: key_text(get(record)) != wanted
    if op == "in":
        if not isinstance(operand, list) or any(isinstance(v, dict | list) for v in operand):
            log.add("'in' takes a list of values", where, "in: [gold, silver]")
            return _never
        allowed = frozenset(key_text(v) for v in operand)
        return lambda record, ctx=None: key_text(get(record)) in allowed
    if op == "exists":
        if not isinstance(operand, bool):
            log.add("'exists' takes true or false", where, "exists: true")
            return _never
        if operand:
            return lambda record, ctx=None: get(record) is not None
        return lambda record, ctx=None: get(record) is None
    if op == "matches":
        if not isinstance(operand, str):
            log.add("'matches' takes a regular expression as text", where, 'matches: "^C-[0-9]+$"')
            return _never
        try:
            search = compile_regex(operand).search  # RE2: linear time, whatever the pattern and the value
        except PatternError as exc:
            log.add(str(exc), where, exc.hint)
            return _never

        def matches(record: Any, ctx: Any = None) -> bool:
            value = get(record)
            return value is not None and search(key_text(value) or "") is not None

        return matches
    if isinstance(operand, bool) or not isinstance(operand, int | float):
        log.add(f"{op!r} takes a number", where, f"{op}: 100")
        return _never
    limit = Decimal(str(operand))
    compare: Callable[[Decimal], bool] = {
        "gt": lambda n: n > limit,
        "gte": lambda n: n >= limit,
        "lt": lambda n: n < limit,
        "lte": lambda n: n <= limit,
    }[op]

    def numeric(record: Any, ctx: Any = None) -> bool:
        value = get(record)
        if value is None or isinstance(value, bool | dict | list):
            return False
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
        except (InvalidOperation, ValueError):
            return False
        return number.is_finite() and compare(number)

    return numeric


def compile_route_condition(spec: Any, doc: YamlDocument, path: YamlPath) -> tuple[Predicate, list[Problem]]:
    """A route's `when:` (on the message payload; `{linked: SYSTEM}` asks about the message's
    source record), with the problems located in `doc` at `path`."""
    log = ProblemLog(doc)
    predicate = compile_condition(spec, path, log, message_record=True)
    return predicate, log.problems


def _link_condition(
    op: str,
    operand: Any,
    get: Callable[..., Any] | None,
    where: YamlPath,
    log: ProblemLog,
    source: tuple[str, str] | None,
) -> Predicate:
    """`linked` / `not_linked`: whether the record at `field` has a cross-reference to `to`; without
    a getter (a route's `when:`), whether the message's source record (`ctx.source`) has."""
    spec = {"to": operand} if isinstance(operand, str) else operand
    example = f"{op}: crm, or {op}: {{to: crm, from: tryton, entity: sale}}"
    if not isinstance(spec, dict) or not spec:
        log.add(f"{op!r} takes a system name or {{to:, from:, entity:}}", where, example)
        return _never
    for key in spec:
        if key not in LINK_KEYS:
            log.add(f"unknown key {key!r} in {op}", (*where, key), did_you_mean(str(key), LINK_KEYS), key=True)
            return _never
    values = {k: spec.get(k, None) for k in LINK_KEYS}
    if get is None:
        to_system = values["to"]
        if not isinstance(to_system, str) or not to_system or values["from"] or values["entity"]:
            log.add(
                f"a route's {op} asks about the message's own record: give only the other system",
                where,
                f"{op}: crm (or test a payload field: {{field: order_id, {op}: {{to: crm, from: x, entity: y}}}})",
            )
            return _never

        def message_linked(record: Any, ctx: Any = None) -> bool:
            ref = getattr(ctx, "source", None)
            if ref is None:
                return False
            return ctx.xref(ref.system, ref.entity, ref.id, to_system) is not None

        if op == "linked":
            return message_linked
        return lambda record, ctx=None: not message_linked(record, ctx)
    if source is not None:
        values["from"] = values["from"] or source[0]
        values["entity"] = values["entity"] or source[1]
    for key in LINK_KEYS:
        if not isinstance(values[key], str) or not values[key]:
            hint = (
                "this mapping's source is canonical: name the record's system and entity, e.g. "
                f"{op}: {{to: tryton, from: crm, entity: order}}"
                if key != "to"
                else example
            )
            log.add(f"{op} needs {key!r} (a system{' or entity' if key == 'entity' else ''} name)", where, hint)
            return _never
    from_system, entity, to_system = str(values["from"]), str(values["entity"]), str(values["to"])

    def linked(record: Any, ctx: Any = None) -> bool:
        record_id = key_text(get(record))
        if ctx is None or not record_id:
            return False
        return ctx.xref(from_system, entity, record_id, to_system) is not None

    if op == "linked":
        return linked
    return lambda record, ctx=None: not linked(record, ctx)


def _never(record: Any, ctx: Any = None) -> bool:
    return False
