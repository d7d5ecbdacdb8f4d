"""`isthmus schema`: JSON Schemas of the envelope and every canonical entity, printed or written.

The full listing runs the console script; the rest run in-process (`cli`) to stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.cli_runner import RunIsthmus

PROMISED = [
    "Envelope",
    "Customer",
    "Contact",
    "Product",
    "SalesOrder",
    "OrderStatus",
    "InventoryLevel",
    "Shipment",
    "Invoice",
]


def _is_object_schema(schema: dict[str, object], title: str) -> bool:
    return schema.get("type") == "object" and schema.get("title") == title and bool(schema.get("properties"))


def test_prints_every_promised_schema(isthmus: RunIsthmus) -> None:
    run = isthmus("schema")
    assert run.code == 0, run.output
    schemas = json.loads(run.out)
    missing = [name for name in PROMISED if name not in schemas]
    assert not missing, f"schemas missing: {missing}"
    for name in PROMISED:
        assert _is_object_schema(schemas[name], name), name
    assert {"message_id", "type", "source", "payload"} <= set(schemas["Envelope"]["properties"])


def test_one_schema_by_name(cli: RunIsthmus) -> None:
    run = cli("schema", "SalesOrder")
    assert run.code == 0, run.output
    assert _is_object_schema(json.loads(run.out), "SalesOrder")


def test_out_writes_one_file_per_schema(cli: RunIsthmus, tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    run = cli("schema", "--out", out)
    assert run.code == 0, run.output
    for name in PROMISED:
        path = out / f"{name}.schema.json"
        assert str(path) in run.out.splitlines(), f"{path} not listed"
        assert _is_object_schema(json.loads(path.read_text()), name)


def test_unknown_name_suggests_the_nearest(cli: RunIsthmus) -> None:
    run = cli("schema", "Custmer")
    run.assert_no_traceback()
    assert run.code == 2
    assert "no schema named 'Custmer'" in run.err and "did you mean 'Customer'?" in run.err


def test_out_naming_a_file_is_an_error_not_a_traceback(cli: RunIsthmus, tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    run = cli("schema", "--out", taken)
    run.assert_no_traceback()
    assert run.code == 2
    assert "is a file" in run.err
    assert taken.read_text() == "keep me"
