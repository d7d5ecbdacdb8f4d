"""The transforms a pipe may use, each with a declared signature checked at load.

A transform is a factory: given its (already type-checked) arguments it returns a step
function `step(value, ctx) -> value`, so that argument parsing, time-zone lookup and regex
compilation happen once, at load. Steps pass None through unless stated (`default`,
`required`, `count`), so a missing source value stays missing instead of failing.

Steps raise ordinary exceptions (ValueError, TypeError, decimal.InvalidOperation) on data they
cannot handle; the compiler turns those into MappingError naming the mapping, the field, the
step and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from middleware.errors import MappingError, XrefMissingError
from middleware.mapping.patterns import compile_regex
from middleware.mapping.pipeline import Arg

StepFn = Callable[[Any, Any], Any]
# A step may carry `step.inline = (kind, argument)`: the same behaviour for the common case (a
# str input), which the compiler writes straight into a mapping's generated build function
# and which falls back to calling the step itself for anything else. Kinds: "method" (a str
# method without arguments), "prefix", "suffix" (text), "decimal" (the quantize exponent).


@dataclass(frozen=True)
class StepSite:
    """Where a step runs, for steps whose errors must name it (xref)."""

    mapping: str
    field: str
    missing_ok: bool = False


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # text | int | number | value
    optional: bool = False


@dataclass(frozen=True)
class TransformDef:
    name: str
    params: tuple[Param, ...]
    factory: Callable[..., StepFn]
    summary: str
    needs_site: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> str:
        if not self.params:
            return self.name
        shown = ", ".join(f"{p.name}?" if p.optional else p.name for p in self.params)
        return f"{self.name}({shown})"


TRANSFORMS: dict[str, TransformDef] = {}


def _register(name: str, params: str, summary: str, *, needs_site: bool = False) -> Callable[..., Any]:
    parsed: list[Param] = []
    for item in params.split(",") if params else []:
        pname, kind = item.strip().split(":")
        parsed.append(Param(pname.rstrip("?"), kind, pname.endswith("?")))

    def decorate(factory: Callable[..., StepFn]) -> Callable[..., StepFn]:
        TRANSFORMS[name] = TransformDef(name, tuple(parsed), factory, summary, needs_site)
        return factory

    return decorate


def coerce_arg(arg: Arg, param: Param) -> Any:
    """The Python value of `arg` for `param`; raises ValueError naming what was expected."""
    if param.kind == "text":
        if arg.kind in ("string", "word"):
            return str(arg.value)
        raise ValueError(f"argument {param.name!r} must be text (a word or a 'quoted string'), got {arg.describe()}")
    if param.kind == "int":
        if arg.kind == "int":
            return arg.value
        raise ValueError(f"argument {param.name!r} must be a whole number, got {arg.describe()}")
    if param.kind == "number":
        if arg.kind in ("int", "number"):
            return arg.value
        raise ValueError(f"argument {param.name!r} must be a number, got {arg.describe()}")
    if arg.kind == "word" and arg.value in _WORD_LITERALS:
        return _WORD_LITERALS[str(arg.value)]
    return arg.value


_WORD_LITERALS: dict[str, Any] = {"null": None, "true": True, "false": False}


# ----- text ---------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, dict | list):
        raise TypeError(f"expected text, got {type(value).__name__}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@_register("prefix", "text:text", "put `text` before the value")
def _prefix(text: str) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str:
            return text + v
        return None if v is None else text + _text(v)

    step.inline = ("prefix", text)  # type: ignore[attr-defined]
    return step


@_register("suffix", "text:text", "put `text` after the value")
def _suffix(text: str) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str:
            return v + text
        return None if v is None else _text(v) + text

    step.inline = ("suffix", text)  # type: ignore[attr-defined]
    return step


@_register("upper", "", "upper-case text")
def _upper() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str:
            return v.upper()
        return None if v is None else _text(v).upper()

    step.inline = ("method", "upper")  # type: ignore[attr-defined]
    return step


@_register("lower", "", "lower-case text")
def _lower() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str:
            return v.lower()
        return None if v is None else _text(v).lower()

    step.inline = ("method", "lower")  # type: ignore[attr-defined]
    return step


@_register("trim", "", "strip leading and trailing white space")
def _trim() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str:
            return v.strip()
        return None if v is None else _text(v).strip()

    step.inline = ("method", "strip")  # type: ignore[attr-defined]
    return step


@_register("replace", "old:text, new:text", "replace every `old` with `new`")
def _replace(old: str, new: str) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        return None if v is None else _text(v).replace(old, new)

    return step


@_register("split", "sep:text, index?:int", "split text into a list, or take item `index` of it")
def _split(sep: str, index: int | None = None) -> StepFn:
    if sep == "":
        raise ValueError("split needs a non-empty separator")
    if index is None:

        def split_all(v: Any, ctx: Any) -> Any:
            return None if v is None else _text(v).split(sep)

        return split_all

    def split_one(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        parts = _text(v).split(sep)
        return parts[index] if -len(parts) <= index < len(parts) else None

    return split_one


@_register("regex", "pattern:text, group?:value", "extract the first match (or `group`); no match gives None")
def _regex(pattern: str, group: Any = None) -> StepFn:
    compiled = compile_regex(pattern)  # RE2: linear time; PatternError (a ValueError) with a rewrite hint
    if group is None:
        group = 1 if compiled.groups else 0
    if isinstance(group, int):
        if not 0 <= group <= compiled.groups:
            raise ValueError(f"regex {pattern!r} has {compiled.groups} group(s); group {group} does not exist")
    elif isinstance(group, str):
        if group not in compiled.groupindex:
            raise ValueError(f"regex {pattern!r} has no group named {group!r}")
    else:
        raise ValueError("regex group must be a number or a group name")
    search = compiled.search

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        found = search(_text(v))
        return found.group(group) if found else None

    return step


@_register("join", "sep:text", "join a list into text; None and empty items are skipped")
def _join(sep: str) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, list | tuple):
            return sep.join(_text(item) for item in v if item is not None and item != "")
        return _text(v)

    return step


# ----- numbers ------------------------------------------------------------------------------
def to_decimal(v: Any) -> Decimal | None:
    """Decimal from str/int/float/Decimal; '' gives None; text that is no number raises."""
    kind = type(v)
    if kind is str:
        if not v.strip():
            return None
        number = Decimal(v)
    elif kind is int or kind is Decimal:
        number = Decimal(v)
    elif kind is float:
        number = Decimal(repr(v))
    elif isinstance(v, Decimal | int) and not isinstance(v, bool):
        number = Decimal(v)
    else:
        raise TypeError(f"expected a number, got {type(v).__name__}")
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


@_register("decimal", "scale:int", "exact decimal rounded half-up to `scale` places")
def _decimal(scale: int) -> StepFn:
    if not 0 <= scale <= 18:
        raise ValueError(f"decimal scale must be between 0 and 18, got {scale}")
    exponent = Decimal(1).scaleb(-scale)

    def step(v: Any, ctx: Any) -> Any:
        if type(v) is str and v:
            number = Decimal(v).quantize(exponent, ROUND_HALF_UP)
        elif v is None:
            return None
        else:
            parsed = to_decimal(v)
            if parsed is None:
                return None
            number = parsed.quantize(exponent, ROUND_HALF_UP)
        if number.is_finite():
            return number
        raise ValueError("not a finite number")

    step.inline = ("decimal", exponent)  # type: ignore[attr-defined]
    return step


@_register("round", "places:int", "round half-up to `places` decimal places (Decimal stays Decimal)")
def _round(places: int) -> StepFn:
    exponent = Decimal(1).scaleb(-places)

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if type(v) is int:
            return v
        number = to_decimal(v)
        if number is None:
            return None
        rounded = number.quantize(exponent, rounding=ROUND_HALF_UP)
        return float(rounded) if type(v) is float else rounded

    return step


@_register("abs", "", "absolute value")
def _abs() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
            return abs(v)
        number = to_decimal(v)
        return None if number is None else abs(number)

    return step


@_register("int", "", "whole number (text like '2' or '2.0', or an integral number)")
def _int() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if type(v) is int:
            return v
        if isinstance(v, bool):
            return int(v)
        number = to_decimal(v)
        if number is None:
            return None
        if number != number.to_integral_value():
            raise ValueError("not a whole number")
        return int(number)

    return step


@_register("float", "", "floating-point number")
def _float() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if type(v) is str and not v.strip():
            return None
        if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
            raise TypeError(f"expected a number, got {type(v).__name__}")
        return float(v)

    return step


@_register("str", "", "text (numbers as written, dates as ISO 8601, booleans as true/false)")
def _str() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        return None if v is None else _text(v)

    return step


_TRUE = frozenset({"true", "yes", "y", "1", "on", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "off", "f"})


@_register("bool", "", "boolean from true/false, yes/no, on/off, 1/0")
def _bool() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if type(v) is str:
            text = v.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            if not text:
                return None
            raise ValueError("not a boolean (use true/false, yes/no, on/off, 1/0)")
        if isinstance(v, int | Decimal | float) and v in (0, 1):
            return bool(v)
        raise ValueError("not a boolean")

    return step


# ----- dates and times ----------------------------------------------------------------------
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def parse_zone(name: str) -> tzinfo:
    """UTC / Z, a fixed offset (+08:00, -0530) or an IANA name (Europe/Berlin)."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    offset = _OFFSET.match(name)
    if offset:
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta >= timedelta(hours=24):
            raise ValueError(f"offset {name!r} is out of range")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use UTC, an offset like '+08:00' or an IANA name like Europe/Berlin"
        ) from exc


def _is_iso(fmt: str | None) -> bool:
    return fmt is None or fmt.upper() in ("ISO", "ISO8601")


def parse_datetime(v: Any, fmt: str | None, zone: tzinfo) -> datetime | None:
    """Aware datetime from text/number/date; naive input is taken to be in `zone`."""
    if type(v) is str:
        text = v.strip()
        if not text:
            return None
        moment = datetime.fromisoformat(text) if _is_iso(fmt) else datetime.strptime(text, str(fmt))
    elif isinstance(v, datetime):
        moment = v
    elif isinstance(v, date):
        moment = datetime(v.year, v.month, v.day)
    elif isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        return datetime.fromtimestamp(float(v), UTC)
    else:
        raise TypeError(f"expected a date-time, got {type(v).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


@_register("datetime", "format?:text, tz?:text", "parse a date-time (ISO by default); naive input is in `tz`")
def _datetime(fmt: str | None = None, tz: str | None = None) -> StepFn:
    zone = parse_zone(tz) if tz is not None else UTC
    if not _is_iso(fmt):
        _check_format(str(fmt))

    def step(v: Any, ctx: Any) -> Any:
        return None if v is None else parse_datetime(v, fmt, zone)

    return step


@_register("date", "format?:text", "parse a date (ISO by default); a date-time gives its date")
def _date(fmt: str | None = None) -> StepFn:
    if not _is_iso(fmt):
        _check_format(str(fmt))

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, datetime):
            return v.date()
        if isinstance(v, date):
            return v
        if type(v) is str:
            text = v.strip()
            if not text:
                return None
            if _is_iso(fmt):
                return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
            return datetime.strptime(text, str(fmt)).date()
        raise TypeError(f"expected a date, got {type(v).__name__}")

    return step


@_register("to_tz", "zone:text", "convert a date-time to `zone` (text is parsed as ISO, naive as UTC)")
def _to_tz(zone_name: str) -> StepFn:
    zone = parse_zone(zone_name)

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        moment = v if isinstance(v, datetime) else parse_datetime(v, None, UTC)
        if moment is None:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(zone)

    return step


def _check_format(fmt: str) -> None:
    if "%" not in fmt:
        raise ValueError(f"date format {fmt!r} has no % directive (e.g. '%d.%m.%Y'); use ISO for ISO 8601")


@_register("format_date", "format:text", "date (or date-time) as text, strftime `format`")
def _format_date(fmt: str) -> StepFn:
    _check_format(fmt)

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        if type(v) is str:
            v = date.fromisoformat(v) if len(v) == 10 else datetime.fromisoformat(v)
        if not isinstance(v, date):
            raise TypeError(f"expected a date, got {type(v).__name__}")
        return v.strftime(fmt)

    return step


@_register("format_datetime", "format:text", "date-time as text, strftime `format`")
def _format_datetime(fmt: str) -> StepFn:
    _check_format(fmt)

    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return None
        moment = v if isinstance(v, datetime) else parse_datetime(v, None, UTC)
        return None if moment is None else moment.strftime(fmt)

    return step


@_register("iso", "", "date or date-time as ISO 8601 text")
def _iso() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None or type(v) is str:
            return v
        if isinstance(v, datetime | date):
            return v.isoformat()
        raise TypeError(f"expected a date or date-time, got {type(v).__name__}")

    return step


# ----- lists and presence -------------------------------------------------------------------
@_register("first", "", "first item of a list (None when empty)")
def _first() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if isinstance(v, list | tuple):
            return v[0] if v else None
        return v

    return step


@_register("last", "", "last item of a list (None when empty)")
def _last() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if isinstance(v, list | tuple):
            return v[-1] if v else None
        return v

    return step


@_register("count", "", "number of items in a list (None counts 0)")
def _count() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None:
            return 0
        if isinstance(v, list | tuple | dict | str):
            return len(v)
        return 1

    return step


@_register("default", "value:value", "replace None or empty text with `value`")
def _default(value: Any) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        return value if v is None or v == "" else v

    return step


@_register("required", "", "fail the record when the value is None or empty text")
def _required() -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None or v == "":
            raise ValueError("a value is required here but it is missing or empty")
        return v

    return step


# ----- cross-references ---------------------------------------------------------------------
@_register(
    "xref",
    "from_system:text, entity:text, to_system:text",
    "id in `to_system` of the record linked to this id in `from_system`",
    needs_site=True,
)
def _xref(from_system: str, entity: str, to_system: str, *, site: StepSite) -> StepFn:
    def step(v: Any, ctx: Any) -> Any:
        if v is None or v == "":
            return None
        if ctx is None:
            raise MappingError(
                "xref needs a mapping context (the worker passes one; previews pass StaticMappingContext)",
                mapping=site.mapping,
                field=site.field,
            )
        record_id = v if type(v) is str else _text(v)
        found = ctx.xref(from_system, entity, record_id, to_system)
        if found is None and not site.missing_ok:
            raise XrefMissingError(
                f"mapping {site.mapping!r} field {site.field!r}: no {to_system} id linked to "
                f"{from_system} {entity} {record_id!r} yet (is that {entity} synced?)",
                from_system=from_system,
                entity=entity,
                record_id=record_id,
                to_system=to_system,
            )
        return found

    return step


# Transforms whose steps do not pass None through unchanged (documented above).
NONE_AWARE = frozenset({"default", "required", "count"})


# ----- plugins ------------------------------------------------------------------------------
PLUGIN_GROUP = "isthmus.transforms"
PLUGIN_PROBLEMS: dict[str, str] = {}  # entry point name → why it could not be registered
_plugins_loaded = False


def transform(params: str = "", summary: str = "") -> Callable[[Callable[..., StepFn]], Callable[..., StepFn]]:
    """Mark a factory as an Isthmus transform that an `isthmus.transforms` entry point may name.

    `params` declares its arguments as the built-ins do (`"sep:text, count?:int"`; kinds text,
    int, number, value), so the mapping loader checks them at load. The factory gets the
    arguments and returns `step(value, ctx) -> value`; raise ValueError or TypeError on data
    it cannot handle (the record's mapping then fails with the transform's message). The
    entry point's name is the transform's name in pipes::

        [project.entry-points."isthmus.transforms"]
        initials = "my_package.transforms:initials"
    """

    def mark(factory: Callable[..., StepFn]) -> Callable[..., StepFn]:
        factory.isthmus_transform = (params, summary)  # type: ignore[attr-defined]
        return factory

    return mark


def load_plugin_transforms(*, reload: bool = False) -> dict[str, str]:
    """Register the transforms of installed `isthmus.transforms` entry points (once per process).

    Built-ins win over a plugin of the same name (a plugin must not change what `trim` means);
    a plugin that fails to import or is not marked with `@transform` is left out and its reason
    kept in PLUGIN_PROBLEMS, which an unknown-transform error then quotes. Returns PLUGIN_PROBLEMS.
    """
    global _plugins_loaded
    if _plugins_loaded and not reload:
        return PLUGIN_PROBLEMS
    from importlib.metadata import entry_points

    _plugins_loaded = True
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in TRANSFORMS and ep.name not in _PLUGIN_NAMES:
            PLUGIN_PROBLEMS[ep.name] = f"plugin {ep.value!r} is ignored: {ep.name!r} is a built-in transform"
            continue
        try:
            factory = ep.load()
            marked = getattr(factory, "isthmus_transform", None)
            if marked is None:
                raise TypeError("not marked with @middleware.mapping.transforms.transform(...)")
            params, summary = marked
            parsed = [
                Param(name.strip().rstrip("?"), kind.strip(), name.strip().endswith("?"))
                for name, kind in (item.split(":") for item in params.split(",") if item.strip())
            ]
        except Exception as exc:  # a broken plugin must not stop the others
            PLUGIN_PROBLEMS[ep.name] = f"plugin {ep.value!r} failed to load: {type(exc).__name__}: {exc}"
            continue
        TRANSFORMS[ep.name] = TransformDef(ep.name, tuple(parsed), factory, summary or f"plugin {ep.value}")
        _PLUGIN_NAMES.add(ep.name)
        PLUGIN_PROBLEMS.pop(ep.name, None)
    return PLUGIN_PROBLEMS


_PLUGIN_NAMES: set[str] = set()


def find_transform(name: str) -> TransformDef | None:
    """The transform called `name`: a built-in, or a plugin (entry points are read on first need)."""
    found = TRANSFORMS.get(name)
    if found is None and not _plugins_loaded:
        load_plugin_transforms()
        found = TRANSFORMS.get(name)
    return found
