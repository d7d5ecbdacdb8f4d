"""Every transform of the pipe language, run through a compiled one-field mapping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from middleware.errors import ConfigError, MappingError
from middleware.mapping import TRANSFORMS, compile_mapping_text
from middleware.mapping.pipeline import PipelineSyntaxError, parse_pipeline


def run(transform: str, value: Any, **record: Any) -> Any:
    text = f"""
mapping: t
source: test.in
target: test.out
fields:
  out: {{from: v, transform: "{transform}"}}
"""
    mapping = compile_mapping_text(text)
    result = mapping.apply({"v": value, **record})
    assert result is not None
    return result["out"]


def test_text_transforms_change_text() -> None:
    assert run("prefix('CRM-')", "C-1") == "CRM-C-1"
    assert run("suffix('-X')", "A") == "A-X"
    assert run("upper", "abc") == "ABC"
    assert run("lower", "AbC") == "abc"
    assert run("trim", "  a b  ") == "a b"
    assert run("replace('-', '/')", "a-b-c") == "a/b/c"
    assert run("trim | upper | prefix(X)", " a ") == "XA"


def test_text_transforms_accept_numbers_as_text() -> None:
    assert run("prefix('N')", 12) == "N12"
    assert run("str", Decimal("1.50")) == "1.50"
    assert run("str", True) == "true"


def test_none_passes_through_every_transform_but_default_required_and_count() -> None:
    passing = [name for name in TRANSFORMS if name not in ("default", "required", "count", "xref")]
    samples = {
        "prefix": "prefix(a)",
        "suffix": "suffix(a)",
        "replace": "replace(a, b)",
        "decimal": "decimal(2)",
        "round": "round(1)",
        "date": "date",
        "datetime": "datetime",
        "to_tz": "to_tz(UTC)",
        "format_date": "format_date('%Y')",
        "format_datetime": "format_datetime('%Y')",
        "join": "join(',')",
        "split": "split(',')",
        "regex": "regex('a')",
    }
    for name in passing:
        assert run(samples.get(name, name), None) is None, name
    assert run("count", None) == 0
    assert run("default(x)", None) == "x"


def test_decimal_rounds_half_up_and_accepts_text_int_and_float() -> None:
    assert run("decimal(2)", "2.345") == Decimal("2.35")
    assert run("decimal(2)", "2.344") == Decimal("2.34")
    assert run("decimal(0)", "2.5") == Decimal("3")
    assert run("decimal(2)", "-2.345") == Decimal("-2.35")
    assert run("decimal(3)", 2) == Decimal("2.000")
    assert run("decimal(2)", 0.1) == Decimal("0.10")
    assert run("decimal(2)", "") is None


def test_decimal_of_text_that_is_no_number_names_field_step_and_value() -> None:
    with pytest.raises(MappingError) as caught:
        run("trim | decimal(2)", " abc ")
    error = caught.value
    assert error.mapping == "t" and error.field == "out"
    assert "decimal(2) cannot handle 'abc'" in str(error)
    with pytest.raises(MappingError, match="not a finite number"):
        run("decimal(2)", "NaN")


def test_number_transforms() -> None:
    assert run("int", "42") == 42
    assert run("int", "42.0") == 42
    with pytest.raises(MappingError, match="not a whole number"):
        run("int", "4.5")
    assert run("float", "1.5") == 1.5
    assert run("round(1)", Decimal("2.25")) == Decimal("2.3")
    assert run("round(1)", 2.25) == 2.3
    assert run("abs", "-3.5") == Decimal("3.5")
    assert run("abs", -4) == 4


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("FALSE", False), ("1", True), ("off", False)])
def test_bool_reads_common_spellings(text: str, expected: bool) -> None:
    assert run("bool", text) is expected


def test_bool_rejects_other_text() -> None:
    with pytest.raises(MappingError, match="not a boolean"):
        run("bool", "maybe")


def test_datetime_with_offset_converted_to_utc() -> None:
    result = run("datetime | to_tz(UTC)", "2026-11-24T10:00:00+08:00")
    assert result == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert result.utcoffset() == timedelta(0)


def test_naive_datetime_is_taken_to_be_in_the_given_zone() -> None:
    result = run("datetime(ISO, '+08:00')", "2026-11-24T10:00:00")
    assert result.utcoffset() == timedelta(hours=8)
    assert run("datetime", "2026-11-24T10:00:00").tzinfo is UTC
    berlin = run("datetime('%d.%m.%Y %H:%M', Europe/Berlin) | to_tz(UTC)", "24.11.2026 10:00")
    assert berlin == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_to_tz_accepts_offsets_and_iana_names() -> None:
    moment = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert run("to_tz('-05:30')", moment).utcoffset() == -timedelta(hours=5, minutes=30)
    assert run("to_tz(Asia/Singapore) | format_datetime('%H:%M')", moment) == "10:00"


def test_dates_parse_and_format() -> None:
    assert run("date", "2026-11-24") == date(2026, 11, 24)
    assert run("date('%d.%m.%Y')", "24.11.2026") == date(2026, 11, 24)
    assert run("datetime | to_tz(UTC) | date", "2026-11-24T07:30:00+08:00") == date(2026, 11, 23)
    assert run("format_date('%d/%m/%Y')", "2026-11-24") == "24/11/2026"
    assert run("iso", date(2026, 11, 24)) == "2026-11-24"
    assert run("datetime | iso", "2026-11-24T10:00:00Z") == "2026-11-24T10:00:00+00:00"
    assert run("datetime", 0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert run("datetime", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))).hour == 0 + 0


def test_bad_date_text_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="cannot handle 'yesterday'"):
        run("date", "yesterday")


def test_list_transforms() -> None:
    assert run("join(' ')", None, a=1) is None
    assert run("split(',')", "a,b,c") == ["a", "b", "c"]
    assert run("split(',', 1)", "a,b,c") == "b"
    assert run("split(',', -1)", "a,b,c") == "c"
    assert run("split(',', 5)", "a,b") is None
    assert run("split(',') | first", "a,b") == "a"
    assert run("split(',') | last", "a,b") == "b"
    assert run("split(',') | count", "a,b") == 2
    assert run("first", []) is None


def test_join_over_several_sources_skips_missing_parts() -> None:
    text = """
mapping: t
source: test.in
target: test.out
fields:
  display: {from: [first, middle, last], transform: "join(' ')"}
"""
    mapping = compile_mapping_text(text)
    assert mapping.apply({"first": "Ada", "last": "Lovelace"}) == {"display": "Ada Lovelace"}


def test_regex_extracts_group_and_gives_none_without_match() -> None:
    assert run("regex('C-(\\\\d+)')", "id C-1001 x") == "1001"
    assert run("regex('[A-Z]+')", "abc DEF") == "DEF"
    assert run("regex('(?P<n>\\\\d+)', n)", "x42") == "42"
    assert run("regex('C-(\\\\d+)')", "nothing here") is None


def test_default_and_required_transforms() -> None:
    assert run("default(0)", "") == 0
    assert run("default(null)", "") is None
    assert run("trim | default(n/a)", "  ") == "n/a"
    with pytest.raises(MappingError, match="required"):
        run("trim | required", "   ")


def test_pipeline_parser_reads_quotes_numbers_and_words() -> None:
    steps = parse_pipeline('a | b(\'x, y\', "q\\"", -3, 2.5, Europe/Berlin)')
    assert [s.name for s in steps] == ["a", "b"]
    assert [a.value for a in steps[1].args] == ["x, y", 'q"', -3, Decimal("2.5"), "Europe/Berlin"]


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('x')", "upper; lower", "decimal(2", "prefix('a)", "Upper", "a | | b", "exec(open)"],
)
def test_pipeline_text_outside_the_grammar_or_registry_is_rejected_at_load(text: str) -> None:
    mapping_text = f"""
mapping: t
source: test.in
target: test.out
fields:
  out: {{from: v, transform: {text!r}}}
"""
    with pytest.raises(ConfigError):
        compile_mapping_text(mapping_text)


def test_malicious_transform_argument_is_never_evaluated(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    called: list[str] = []
    monkeypatch.setattr(os, "system", lambda cmd: called.append(cmd) or 0)
    with pytest.raises(ConfigError) as caught:
        run("prefix(__import__('os').system('x'))", "a")
    assert called == []
    assert "expected" in str(caught.value)
    # quoted, it is just text: a prefix, never code
    assert run("prefix(\\\"__import__('os').system('x')\\\")", "a") == "__import__('os').system('x')a"
    assert called == []


def test_pipeline_syntax_error_carries_the_position() -> None:
    with pytest.raises(PipelineSyntaxError) as caught:
        parse_pipeline("trim | upper(")
    assert caught.value.position == len("trim | upper(")
