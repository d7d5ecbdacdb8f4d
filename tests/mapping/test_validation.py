"""Loading checks every mapping file and reports every problem with file:line:col and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.errors import ConfigError, Problem
from middleware.mapping import load_mappings, validate_mappings


def problems_of(tmp_path: Path, text: str, name: str = "m.yaml") -> list[Problem]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    mapping_set, problems = validate_mappings([path])
    assert not problems or len(mapping_set) == 0
    return problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(p.render() for p in problems)
    return problems[0]


def at(problem: Problem, file: Path, line: int, column: int | None = None) -> None:
    assert problem.location is not None
    assert problem.location.file == str(file)
    assert problem.location.line == line, problem.render()
    if column is not None:
        assert problem.location.column == column, problem.render()


HEAD = "mapping: m\nsource: crm.customer\ntarget: Customer\nfields:\n  customer_id: no_\n  name: company\n"


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, HEAD + "  email: {from: email\n  tier: tier\n"))
    assert "YAML syntax error" in problem.message
    at(problem, tmp_path / "m.yaml", 8)


def test_unknown_top_level_key_is_located_at_the_key_with_a_hint(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, HEAD + "exampels: []\n"))
    assert problem.message == "unknown key 'exampels'"
    assert "did you mean 'examples'" in problem.hint
    at(problem, tmp_path / "m.yaml", 7, 1)


def test_unknown_field_spec_key_is_located_at_the_key_with_a_hint(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, HEAD + "  email: {from: email, transfrom: lower}\n"))
    assert problem.message == "unknown key 'transfrom'"
    assert "did you mean 'transform'" in problem.hint
    assert problem.path == "fields.email.transfrom"
    at(problem, tmp_path / "m.yaml", 7, 24)


def test_unknown_canonical_target_field_hints_nearest_names(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, HEAD + "  emial: email\n"))
    assert problem.message == "Customer has no field 'emial'"
    assert "'email'" in problem.hint
    at(problem, tmp_path / "m.yaml", 7, 3)


def test_unknown_nested_target_field_hints_names_of_that_level(tmp_path: Path) -> None:
    text = HEAD + "  addresses:\n    - kind: {const: billing}\n      zip: billing.zip\n"
    problem = only(problems_of(tmp_path, text))
    assert problem.message == "Address has no field 'zip'"
    at(problem, tmp_path / "m.yaml", 9, 7)
    text = (
        "mapping: m\nsource: a.b\ntarget: SalesOrder\nfields:\n  order_id: a\n  customer_id: b\n"
        "  order_date: c\n  currency: d\n  shipping_address.cty: e\n"
    )
    problem = only(problems_of(tmp_path, text))
    assert problem.message == "Address has no field 'cty'"
    assert "'city'" in problem.hint
    at(problem, tmp_path / "m.yaml", 9, 3)


def test_unknown_source_path_of_a_canonical_source_is_reported(tmp_path: Path) -> None:
    text = (
        "mapping: m\nsource: Customer\ntarget: erp.account\nfields:\n  a: name\n  b: {from: adresses.0.city}\n"
        "  c: addresses.0.cty\n"
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert problems[0].message == "Customer has no field 'adresses' (source path 'adresses.0.city')"
    assert "'addresses'" in problems[0].hint
    at(problems[0], tmp_path / "m.yaml", 6, 13)
    assert problems[1].message == "Address has no field 'cty' (source path 'addresses.0.cty')"
    at(problems[1], tmp_path / "m.yaml", 7, 6)


def test_required_canonical_target_fields_not_mapped_are_errors(tmp_path: Path) -> None:
    text = (
        "mapping: m\nsource: a.b\ntarget: SalesOrder\nfields:\n  order_id: a\n  customer_id: b\n"
        "  lines:\n    each: items\n    fields:\n      sku: sku\n      quantity: q\n"
    )
    problems = problems_of(tmp_path, text)
    found = sorted((p.location.line if p.location else 0, p.message) for p in problems)
    assert found == [
        (4, "required field 'currency' of SalesOrder is not mapped"),
        (4, "required field 'order_date' of SalesOrder is not mapped"),
        (9, "required field 'lines[].line_number' of SalesOrderLine is not mapped"),
        (9, "required field 'lines[].unit_price' of SalesOrderLine is not mapped"),
    ]
    assert all("{const: ...}" in p.hint for p in problems)


def test_unknown_transform_hints_nearest_names(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, HEAD + '  email: {from: email, transform: "trim | lowr"}\n'))
    assert problem.message == "unknown transform 'lowr' in 'trim | lowr'"
    assert "did you mean 'lower'" in problem.hint
    assert problem.path == "fields.email.transform"
    at(problem, tmp_path / "m.yaml", 7, 35)


def test_wrong_transform_arity_and_argument_type(tmp_path: Path) -> None:
    text = HEAD + '  email: {from: email, transform: "decimal"}\n  tier: {from: tier, transform: "decimal(two)"}\n'
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert problems[0].message == "decimal takes 1 argument, got 0"
    assert "decimal(scale)" in problems[0].hint
    at(problems[0], tmp_path / "m.yaml", 7)
    assert "argument 'scale' must be a whole number, got two" in problems[1].message
    at(problems[1], tmp_path / "m.yaml", 8)


def test_bad_regex_in_transform_and_condition(tmp_path: Path) -> None:
    text = (
        HEAD + "  email: {from: email, transform: \"regex('([a-z')\"}\n"
        "  tier: {from: tier, when: {field: tier, matches: '(['}}\n"
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert "bad regular expression" in problems[0].message
    at(problems[0], tmp_path / "m.yaml", 7)
    assert "bad regular expression" in problems[1].message
    assert problems[1].path == "fields.tier.when.matches"
    at(problems[1], tmp_path / "m.yaml", 8, 51)


def test_bad_condition_shapes(tmp_path: Path) -> None:
    text = HEAD + (
        "  email: {from: email, when: {field: email, equal: x}}\n"
        "  tier: {from: tier, when: {field: tier}}\n"
        "  phone: {from: phone, when: {all: {field: phone, exists: true}}}\n"
        "  tax_id: {from: vat, when: {field: vat, gt: ten}}\n"
    )
    problems = problems_of(tmp_path, text)
    assert [p.location.line for p in problems if p.location] == [7, 8, 9, 10]
    assert problems[0].message == "unknown condition key 'equal'"
    assert "did you mean 'equals'" in problems[0].hint
    assert problems[1].message == "condition on 'tier' has no operator"
    assert problems[2].message == "'all' takes a non-empty list of conditions"
    assert problems[3].message == "'gt' takes a number"


def test_each_without_fields_and_fields_without_each(tmp_path: Path) -> None:
    text = "mapping: m\nsource: a.b\ntarget: x.y\nfields:\n  lines:\n    each: items\n  other:\n    fields: {a: b}\n"
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert problems[0].message.startswith("each: without fields:")
    at(problems[0], tmp_path / "m.yaml", 6, 5)
    assert problems[1].message.startswith("fields: without each:")
    at(problems[1], tmp_path / "m.yaml", 8, 5)


def test_bad_time_zone_name(tmp_path: Path) -> None:
    problem = only(
        problems_of(tmp_path, HEAD + '  updated_at: {from: u, transform: "datetime | to_tz(Europe/Berln)"}\n')
    )
    assert "unknown time zone 'Europe/Berln'" in problem.message
    at(problem, tmp_path / "m.yaml", 7, 36)


def test_index_outside_each_and_two_origins_are_reported(tmp_path: Path) -> None:
    text = HEAD + "  email: {index: 1}\n  tier: {from: tier, const: x}\n"
    problems = problems_of(tmp_path, text)
    assert [p.location.line for p in problems if p.location] == [7, 8]
    assert "inside an each: block" in problems[0].message
    assert "exactly one of from:, const: or index:" in problems[1].message


def test_nested_block_instead_of_dotted_paths_is_explained(tmp_path: Path) -> None:
    text = "mapping: m\nsource: a.b\ntarget: x.y\nfields:\n  address:\n    street: s\n    city: c\n"
    problem = only(problems_of(tmp_path, text))
    assert "dotted target paths" in problem.hint and "address.street" in problem.hint


def test_unknown_entity_name_for_source_or_target(tmp_path: Path) -> None:
    text = "mapping: m\nsource: Custmer\ntarget: x.y\nfields:\n  a: b\n"
    problem = only(problems_of(tmp_path, text))
    assert "'Custmer' is neither a canonical entity" in problem.message
    assert "'Customer'" in problem.hint
    at(problem, tmp_path / "m.yaml", 2, 9)


def test_example_shape_is_checked(tmp_path: Path) -> None:
    text = (
        HEAD + "examples:\n  - name: no outcome\n    input: {company: x}\n  - name: bad key\n    input: {}\n"
        "    expect: {}\n"
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2
    assert "exactly one of expected:, skipped: true or error:" in problems[0].message
    at(problems[0], tmp_path / "m.yaml", 8, 5)
    assert problems[1].message == "unknown key 'expect'"
    assert "did you mean 'expected'" in problems[1].hint
    at(problems[1], tmp_path / "m.yaml", 12, 5)


def test_example_input_of_a_canonical_source_is_validated(tmp_path: Path) -> None:
    text = (
        "mapping: m\nsource: Customer\ntarget: x.y\nfields:\n  a: name\nexamples:\n"
        "  - name: typo\n    input: {customer_id: C-1, name: A, nmae: B}\n    expected: {a: A}\n"
    )
    problem = only(problems_of(tmp_path, text))
    assert "example input is not a valid Customer: unknown key 'nmae'" in problem.message
    at(problem, tmp_path / "m.yaml", 8, 40)


def test_all_errors_are_reported_not_just_the_first(tmp_path: Path) -> None:
    text = (
        "mapping: m\nsource: crm.customer\ntarget: Customer\nfields:\n"
        "  customer_id: no_\n"
        "  name: {from: company, transform: uper}\n"
        "  emial: email\n"
        "  tier: {from: tier, values: {gold: A}, otherwse: C}\n"
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 3
    assert [p.location.line for p in problems if p.location] == [6, 7, 8]


def test_problems_of_a_broken_top_level_still_include_field_problems(tmp_path: Path) -> None:
    text = (
        "mapping: Bad-Id\nsource: crm.customer\ntarget: Customer\nfields:\n  customer_id: no_\n  name: x\n  nmae: y\n"
    )
    problems = problems_of(tmp_path, text)
    assert [p.location.line for p in problems if p.location] == [1, 7]


def test_duplicate_mapping_id_across_files_names_the_first(tmp_path: Path) -> None:
    good = "mapping: same\nsource: a.b\ntarget: c.d\nfields:\n  x: y\n"
    (tmp_path / "a.yaml").write_text(good, encoding="utf-8")
    (tmp_path / "b.yml").write_text("# second\n" + good, encoding="utf-8")
    mapping_set, problems = validate_mappings([tmp_path])
    problem = only(problems)
    assert problem.message == "mapping id 'same' is already used"
    at(problem, tmp_path / "b.yml", 2, 10)
    assert f"{tmp_path / 'a.yaml'}:1:10" in problem.hint
    assert list(mapping_set) == ["same"]


def test_every_file_in_a_folder_is_checked_and_load_raises_with_all(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("mapping: one\nsource: a.b\ntarget: c.d\nfields:\n  x: {frm: y}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.yaml").write_text("mapping: two\nsource: a.b\ntarget: c.d\nfields:\n  x: y\nwhen: 3\n")
    (tmp_path / "ok.yaml").write_text("mapping: ok\nsource: a.b\ntarget: c.d\nfields:\n  x: y\n")
    (tmp_path / "notes.txt").write_text("not a mapping")
    mapping_set, problems = validate_mappings([tmp_path, tmp_path / "missing.yaml"])
    assert sorted(Path(p.location.file).name for p in problems if p.location) == [
        "missing.yaml",
        "one.yaml",
        "two.yaml",
    ]
    assert list(mapping_set) == ["ok"]
    with pytest.raises(ConfigError) as caught:
        load_mappings([tmp_path])
    assert len(caught.value.problems) == 2


def test_chain_of_unknown_or_mismatched_ids_is_reported_by_the_set(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "mapping: a\nsource: x.in\ntarget: Customer\nfields:\n  customer_id: i\n  name: n\n"
    )
    (tmp_path / "b.yaml").write_text("mapping: b\nsource: SalesOrder\ntarget: y.out\nfields:\n  o: order_id\n")
    mappings = load_mappings([tmp_path])
    problems = mappings.chain_problems(["a", "b"])
    assert "reads 'SalesOrder'" in only(problems).message
    at(problems[0], tmp_path / "b.yaml", 2, 9)
    assert "did you mean 'a'" in only(mappings.chain_problems(["aa"])).hint
    with pytest.raises(ConfigError):
        mappings.chain(["a", "b"])


def test_an_unclosed_bracket_points_back_to_where_it_opened() -> None:
    from middleware.yamlsource import load_yaml_text

    text = "mapping: x\nsource: a.b\ntarget: c.d\nfields:\n  customer_id: [customer_no\n  name: n\n"
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, "m.yaml")
    (problem,) = info.value.problems
    assert problem.location is not None and problem.location.line == 6
    assert "starts at line 5, column 16" in problem.hint
