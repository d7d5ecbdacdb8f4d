"""`isthmus validate`, `test`, `preview` and `schema`: the commands integrators run on mapping files.

They need no broker, store or system. What they do need (the mapping and config packages) is
imported inside the handlers, so `isthmus --help` and the other commands do not pay for it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from middleware.cli.config_option import DEFAULT_CONFIG, config_file, print_problems
from middleware.errors import ConfigError, Problem, XrefMissingError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("validate", help="check mapping files (and isthmus.yaml) and report every problem")
    p.add_argument("paths", nargs="*", help="mapping files or folders (default: from --config, else mappings/)")
    p.add_argument(
        "--config", default=None, help=f"isthmus.yaml to check as well (default: ./{DEFAULT_CONFIG} if it exists)"
    )
    p.set_defaults(handler=cmd_validate)

    p = subparsers.add_parser("test", help="run the examples: blocks of mapping files")
    p.add_argument("paths", nargs="*")
    p.add_argument("--config", default=None, help=f"take mapping paths from it (default: ./{DEFAULT_CONFIG} if any)")
    p.set_defaults(handler=cmd_test)

    p = subparsers.add_parser("preview", help="map a sample record and print the result")
    p.add_argument("mapping", help="mapping id, or a chain of ids separated by commas")
    p.add_argument("sample", help="JSON file with one record or a list of records")
    p.add_argument("--paths", nargs="*", help="mapping files or folders (default: mappings/)")
    p.add_argument("--config", default=None, help=f"take mapping paths from it (default: ./{DEFAULT_CONFIG} if any)")
    p.add_argument(
        "--xref",
        action="append",
        metavar="SYS:ENTITY:ID=SYS:ID",
        help="a cross-reference to assume, e.g. crm:customer:C-1001=erp:A000001",
    )
    p.set_defaults(handler=cmd_preview)

    p = subparsers.add_parser("schema", help="export JSON Schemas of the envelope and canonical entities")
    p.add_argument("entity", nargs="?", help="only this one (e.g. Customer or Envelope)")
    p.add_argument("--out", help="folder to write <Name>.schema.json files into (default: print)")
    p.set_defaults(handler=cmd_schema)


def _mapping_paths(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "paths", None):
        return [Path(p) for p in args.paths]
    config = config_file(args)
    if config is not None:
        from middleware.config import load_config

        return load_config(config, check_mappings=False).mapping_paths
    return [Path("mappings")]


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem of the mapping files and of the config, all at once; exit 1 if any.

    A broken config is what `validate` checks, so it is reported like a broken mapping (exit 1)
    together with the problems of whatever mapping files can still be found.
    """
    from middleware.config import load_config
    from middleware.mapping import validate_mappings

    config = config_file(args)
    # The default ./isthmus.yaml is checked only when no paths are given; a --config the
    # user named is always checked.
    check_config = config is not None and (args.config is not None or not args.paths)
    config_problems: list[Problem] = []
    paths: list[Path] | None = [Path(p) for p in args.paths] if args.paths else None
    if paths is None and config is not None:
        try:
            paths = load_config(config, check_mappings=False).mapping_paths
        except ConfigError as exc:
            config_problems = list(exc.problems)
            check_config = False  # already reported; the full load would only repeat them
    if paths is None and config is None:
        paths = [Path("mappings")]
    mapping_set, problems = validate_mappings(paths) if paths is not None else ({}, [])
    warnings: list[Problem] = []
    if check_config and config is not None:
        try:
            warnings = load_config(config).warnings
        except ConfigError as exc:
            config_problems = [p for p in exc.problems if p not in problems]
    everything = problems + config_problems
    if any(p.severity != "warning" for p in everything):
        print_problems(ConfigError(everything))
        return 1
    for warning in [*everything, *warnings]:  # reported, but they do not fail validation
        print(warning.render(), file=sys.stderr)
    print(f"ok: {len(mapping_set)} mapping{'s' if len(mapping_set) != 1 else ''} valid")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from middleware.mapping import load_mappings, run_examples

    mapping_set = load_mappings(_mapping_paths(args))
    results = run_examples(mapping_set)
    failed = [r for r in results if not r.passed]
    for result in results:
        print(result.render())
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


_XREF_ARG = re.compile(r"^[^:=\s]+:[^:=\s]+:[^=]+=[^=\s][^=]*$")


def _parse_xrefs(items: Sequence[str] | None) -> dict[str, str]:
    """`--xref crm:customer:C-1=erp:A-7` arguments as the links a StaticMappingContext takes."""
    xrefs: dict[str, str] = {}
    for item in items or []:
        if not _XREF_ARG.match(item):
            raise ConfigError(
                Problem(
                    f"--xref {item!r} is not SYSTEM:ENTITY:ID=SYSTEM:ID",
                    hint="e.g. --xref crm:customer:C-1001=erp:A-7",
                )
            )
        left, right = item.split("=", 1)
        xrefs[left.strip()] = right.strip()
    return xrefs


def _xref_missing_hint(exc: XrefMissingError) -> str:
    """Preview has no state store: the fix is an --xref argument, not waiting for a retry."""
    return (
        "preview has no state store; pass the link with "
        f"--xref {exc.from_system}:{exc.entity}:{exc.record_id}={exc.to_system}:<ID>"
    )


def cmd_preview(args: argparse.Namespace) -> int:
    from middleware.mapping import preview
    from middleware.runtime.chains import resolve_chain

    sample_path = Path(args.sample)
    try:
        sample = json.loads(sample_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        print(f"error: {sample_path} is not UTF-8 text; the sample must be a JSON file", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: {sample_path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", file=sys.stderr)
        return 2
    xrefs = _parse_xrefs(args.xref)
    records = sample if isinstance(sample, list) else [sample]
    mapping = resolve_chain(_mapping_paths(args), args.mapping.split(","))  # compiled once, not per record
    try:
        outputs = [preview(mapping, record, xrefs) for record in records]
    except XrefMissingError as exc:
        print(f"error: {exc}\n    hint: {_xref_missing_hint(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(outputs if isinstance(sample, list) else outputs[0], indent=2, ensure_ascii=False))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from middleware.schema import export_schemas

    written = export_schemas(Path(args.out) if args.out else None, args.entity)
    if args.out:
        for path in written:
            print(path)
    return 0
