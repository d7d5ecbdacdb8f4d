"""Compiling a checked mapping document into closures, and running them.

Everything that can be decided once is decided here: getters for dotted paths, parsed and
type-checked transform pipes, value maps, conditions, the shape of the output. Per record only
the closures run; no text is parsed and no exception is raised for normal data.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from middleware.entities import ENTITIES
from middleware.errors import IsthmusError, MappingError, Problem
from middleware.mapping.conditions import Predicate, compile_condition, key_text
from middleware.mapping.jsonready import to_json_ready
from middleware.mapping.paths import SELF_PATH, is_index, make_getter, single_key, split_path
from middleware.mapping.patterns import PatternError
from middleware.mapping.pipeline import PipelineSyntaxError, Step, parse_pipeline
from middleware.mapping.problemlog import ProblemLog
from middleware.mapping.spec import FIELD_SPEC_KEYS, EachSpec, ExampleSpec, FieldSpec, MappingFileSpec
from middleware.mapping.transforms import (
    PLUGIN_PROBLEMS,
    TRANSFORMS,
    StepFn,
    StepSite,
    coerce_arg,
    find_transform,
)
from middleware.problems import did_you_mean, problems_from_validation, render_path
from middleware.yamlsource import YamlDocument, YamlPath

FieldFn = Callable[[Any, Any], Any]
BlockFn = Callable[[Any, Any], dict[str, Any]]


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # a field whose `when:` is false, or whose source is absent, leaves no key at all
_OMIT_ID = id(OMIT)
_MISSING: Any = object()


def entity_model(name: str) -> type[BaseModel] | None:
    """The canonical model for an entity name, None for '<system>.<entity>' (schemaless)."""
    return ENTITIES.get(name)


def show_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# ----- model introspection ------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    kind: str  # "model" | "list_model" | "list" | "scalar"
    model: type[BaseModel] | None = None


def _shape(annotation: Any) -> _Shape:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Shape("model", annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        inner = _shape(item)
        return _Shape("list_model", inner.model) if inner.kind == "model" else _Shape("list")
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is not None and len(args) == 1:
        return _shape(args[0])
    return _Shape("scalar")


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


# ----- compiled objects ---------------------------------------------------------------------
@dataclass
class CompiledMapping:
    """One mapping, ready to run. `apply` is the fast path; `apply_validated` is what a worker
    writes: validated against the canonical target model and JSON-ready."""

    id: str
    source: str
    target: str
    description: str
    file: str
    block: BlockFn
    when: Predicate | None = None
    examples: list[ExampleSpec] = field(default_factory=list)
    example_paths: list[YamlPath] = field(default_factory=list)
    doc: YamlDocument | None = field(default=None, repr=False)
    merge_keys: dict[str, str] = field(default_factory=dict)
    """Top-level list fields whose items a writer merges into the target's list, by this item key."""

    @property
    def source_model(self) -> type[BaseModel] | None:
        return entity_model(self.source)

    @property
    def target_model(self) -> type[BaseModel] | None:
        return entity_model(self.target)

    def location(self, key: str = "mapping") -> str:
        """`file:line:col` of a top-level key of this mapping's file."""
        if self.doc is None:
            return self.file
        return str(self.doc.locate((key,), key=True))

    def apply(self, record: dict[str, Any], ctx: Any = None) -> dict[str, Any] | None:
        """The mapped record (values may be Decimal/datetime), or None when `when:` is false.

        Raises MappingError (permanent for this record) or XrefMissingError (transient)."""
        if not isinstance(record, dict):
            raise MappingError(f"the input record must be an object, got {type(record).__name__}", mapping=self.id)
        when = self.when
        if when is not None and not when(record, ctx):
            return None
        return self.block(record, ctx)

    def apply_validated(self, record: dict[str, Any], ctx: Any = None) -> dict[str, Any] | None:
        """`apply`, then validated against the canonical target (if any) and made JSON-ready."""
        raw = self.apply(record, ctx)
        if raw is None:
            return None
        return validate_output(self.target_model, raw, self.id)


def validate_output(model: type[BaseModel] | None, raw: dict[str, Any], mapping_id: str) -> dict[str, Any]:
    """JSON-ready output; for a canonical model validated (ValidationError → MappingError).

    Only the top-level fields the mapping produced come out: a model default (`active: true`,
    `addresses: []`) is not something the source record said, and writing it would overwrite
    the target's value. A top-level null the mapping produced stays null (it clears the field
    downstream); nulls inside nested objects are dropped, as before."""
    if model is None:
        return to_json_ready(raw)  # type: ignore[no-any-return]
    try:
        validated = model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = render_path(tuple(first["loc"]))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        got = f"; got {show_value(first['input'])}" if "input" in first and first["type"] != "missing" else ""
        raise MappingError(
            f"output is not a valid {model.__name__}: {first['msg']}{got}{more}",
            mapping=mapping_id,
            field=where,
        ) from exc
    dumped = validated.model_dump(mode="json", exclude_none=True)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in dumped:
            out[key] = dumped[key]
        elif value is None:
            out[key] = None
    return out


class MappingChain:
    """Mappings applied in order: the output of one (validated when canonical) feeds the next.

    Same contract as CompiledMapping: `apply` (last step raw) and `apply_validated`."""

    def __init__(self, mappings: list[CompiledMapping]) -> None:
        if not mappings:
            raise ValueError("a mapping chain needs at least one mapping")
        problems = check_chain(mappings)
        if problems:
            from middleware.errors import ConfigError

            raise ConfigError(problems)
        self.mappings = list(mappings)
        self.id = ",".join(m.id for m in mappings)
        self.source = mappings[0].source
        self.target = mappings[-1].target
        self._head = tuple(mappings[:-1])
        self._last = mappings[-1]
        self.merge_keys = mappings[-1].merge_keys

    def _through_head(self, record: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        current: dict[str, Any] | None = record
        for mapping in self._head:
            current = mapping.apply_validated(current, ctx)  # type: ignore[arg-type]
            if current is None:
                return None
        return current

    def apply(self, record: dict[str, Any], ctx: Any = None) -> dict[str, Any] | None:
        current = self._through_head(record, ctx)
        return None if current is None else self._last.apply(current, ctx)

    def apply_validated(self, record: dict[str, Any], ctx: Any = None) -> dict[str, Any] | None:
        current = self._through_head(record, ctx)
        return None if current is None else self._last.apply_validated(current, ctx)


def compose(mappings: list[CompiledMapping]) -> MappingChain:
    """A chain of `mappings`; raises ConfigError when one's target is not the next one's source."""
    return MappingChain(mappings)


def check_chain(mappings: list[CompiledMapping]) -> list[Problem]:
    """Problems with chaining `mappings` in this order (each target must be the next source)."""
    problems: list[Problem] = []
    for before, after in zip(mappings, mappings[1:], strict=False):
        if before.target != after.source:
            location = after.doc.locate(("source",)) if after.doc is not None else None
            problems.append(
                Problem(
                    f"mapping {after.id!r} reads {after.source!r} but the mapping before it in the chain, "
                    f"{before.id!r}, produces {before.target!r}",
                    location,
                    "source",
                    f"chain mappings whose target and source match, e.g. one with source: {before.target}",
                )
            )
    return problems


# ----- compiling ----------------------------------------------------------------------------
def compile_document(doc: YamlDocument) -> tuple[CompiledMapping | None, list[Problem]]:
    """Check and compile one mapping file; all problems are returned, not just the first,
    in the order they appear in the file."""
    compiled, problems = _compile_document(doc)
    return compiled, sorted(problems, key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))


def _compile_document(doc: YamlDocument) -> tuple[CompiledMapping | None, list[Problem]]:
    log = ProblemLog(doc)
    data = doc.data
    if not isinstance(data, dict):
        log.add("a mapping file must be a YAML mapping with mapping:, source:, target: and fields:", ())
        return None, log.problems
    try:
        spec = MappingFileSpec.model_validate(data)
    except ValidationError as exc:
        log.extend(problems_from_validation(exc, doc, (), MappingFileSpec))
        # keep checking the fields block so that one run shows every problem
        if isinstance(data.get("fields"), dict) and data["fields"]:
            _Compiler(
                doc,
                log,
                str(data.get("mapping", "?")),
                _entity_or_none(data.get("source")),
                _entity_or_none(data.get("target")),
            ).top(data["fields"])
        _check_valid_examples(data, log)
        return None, log.problems
    for key in ("source", "target"):
        _check_entity_name(getattr(spec, key), (key,), log)
    source_model, target_model = entity_model(spec.source), entity_model(spec.target)
    compiler = _Compiler(doc, log, spec.mapping, source_model, target_model, _missing_value(spec.on_missing))
    if source_model is None and "." in spec.source:
        system, _, entity = spec.source.partition(".")
        compiler.native_source = (system, entity)
    when = compiler.condition(spec.when, ("when",), source_model) if spec.when is not None else None
    block = compiler.top(spec.fields)
    _check_examples(list(enumerate(spec.examples)), spec.source, source_model, log)
    if log.problems:
        return None, log.problems
    return (
        CompiledMapping(
            id=spec.mapping,
            source=spec.source,
            target=spec.target,
            description=spec.description,
            file=doc.file,
            block=block,
            when=when,
            examples=spec.examples,
            example_paths=[("examples", i) for i in range(len(spec.examples))],
            doc=doc,
            merge_keys=dict(compiler.merge_keys),
        ),
        [],
    )


def _missing_value(on_missing: str | None) -> Any:
    """What a read of an absent source path gives: OMIT (leave the field out) or None (null)."""
    return OMIT if on_missing == "omit" else None


def _check_valid_examples(data: dict[str, Any], log: ProblemLog) -> None:
    """Check the examples that are well-formed even though the file as a whole is not."""
    examples = data.get("examples")
    if not isinstance(examples, list):
        return
    valid: list[tuple[int, ExampleSpec]] = []
    for i, example in enumerate(examples):
        try:
            valid.append((i, ExampleSpec.model_validate(example)))
        except ValidationError:
            continue  # already reported by the file-level validation
    source = data.get("source")
    _check_examples(valid, str(source), _entity_or_none(source), log)


def _entity_or_none(name: Any) -> type[BaseModel] | None:
    return entity_model(name) if isinstance(name, str) else None


def _check_entity_name(name: str, path: YamlPath, log: ProblemLog) -> None:
    if name in ENTITIES:
        return
    system, dot, entity = name.partition(".")
    if dot and system and entity and "." not in entity and (system + entity).replace("_", "").isalnum():
        return
    log.add(
        f"{name!r} is neither a canonical entity nor '<system>.<entity>'",
        path,
        did_you_mean(name, ENTITIES) + " (or write a native record type like crm.customer)",
    )


def _check_examples(
    examples: list[tuple[int, ExampleSpec]], source: str, source_model: type[BaseModel] | None, log: ProblemLog
) -> None:
    from middleware.mapping.context import StaticMappingContext

    for i, example in examples:
        path: YamlPath = ("examples", i)
        outcomes = [example.expected is not None, example.skipped, example.error is not None]
        if sum(outcomes) != 1:
            log.add(
                f"example {example.name!r} must give exactly one of expected:, skipped: true or error:",
                path,
                "expected: {..} for the output; skipped: true when `when:` rejects the input; "
                "error: 'text' for a MappingError",
            )
        for j, link in enumerate(example.xrefs):
            try:
                StaticMappingContext([{"from": link.from_, "to": link.to}])
            except ValueError as exc:
                log.add(str(exc), (*path, "xrefs", j, "from"))
        if source_model is not None:
            try:
                source_model.model_validate(example.input)
            except ValidationError as exc:
                for problem in problems_from_validation(exc, log.doc, (*path, "input"), source_model):
                    log.problems.append(
                        Problem(
                            f"example input is not a valid {source}: {problem.message}",
                            problem.location,
                            problem.path,
                            problem.hint,
                        )
                    )


@dataclass
class _Leaf:
    spec: Any
    path: YamlPath


class _Compiler:
    def __init__(
        self,
        doc: YamlDocument,
        log: ProblemLog,
        mapping_id: str,
        source_model: type[BaseModel] | None,
        target_model: type[BaseModel] | None,
        missing: Any = OMIT,
    ) -> None:
        self.doc = doc
        self.log = log
        self.mapping_id = mapping_id
        self.source_model = source_model
        self.target_model = target_model
        self.missing = missing  # the mapping's on_missing: OMIT or None
        self.merge_keys: dict[str, str] = {}
        self.native_source: tuple[str, str] | None = None  # (system, entity) of a '<system>.<entity>' source

    # -- paths ------------------------------------------------------------------------------
    def condition(self, spec: Any, path: YamlPath, source_model: type[BaseModel] | None) -> Predicate:
        def check(field_path: str, where: YamlPath) -> None:
            self.check_source_path(field_path, where, source_model)

        return compile_condition(spec, path, self.log, check, self.native_source)

    def check_source_path(self, source_path: str, where: YamlPath, model: type[BaseModel] | None) -> bool:
        """Report a source path that a canonical source model does not have."""
        try:
            parts = split_path(source_path)
        except ValueError as exc:
            self.log.add(str(exc), where, "write a dotted path like billing.city or lines.0.sku")
            return False
        if model is None:
            return True
        current: _Shape = _Shape("model", model)
        walked: list[str] = []
        for part in parts:
            if current.kind in ("list", "list_model"):
                if not is_index(part):
                    self.log.add(f"{'.'.join(walked)!r} is a list; index it (e.g. {'.'.join(walked)}.0)", where)
                    return False
                current = _Shape("model", current.model) if current.kind == "list_model" else _Shape("scalar")
            elif current.kind == "model" and current.model is not None:
                fields = current.model.model_fields
                if part not in fields:
                    level = current.model.__name__
                    self.log.add(
                        f"{level} has no field {part!r} (source path {source_path!r})",
                        where,
                        did_you_mean(part, fields),
                    )
                    return False
                current = _shape(fields[part].annotation)
            else:
                self.log.add(f"{'.'.join(walked)!r} is a single value; it has no {part!r}", where)
                return False
            walked.append(part)
        return True

    def list_item_model(self, source_path: str, model: type[BaseModel] | None) -> type[BaseModel] | None:
        if model is None:
            return None
        current: _Shape = _Shape("model", model)
        for part in split_path(source_path):
            if current.kind == "model" and current.model is not None:
                info = current.model.model_fields.get(part)
                if info is None:
                    return None
                current = _shape(info.annotation)
            elif current.kind == "list_model" and is_index(part):
                current = _Shape("model", current.model)
            else:
                return None
        return current.model if current.kind == "list_model" else None

    # -- blocks -----------------------------------------------------------------------------
    def top(self, fields: dict[str, Any]) -> BlockFn:
        return self.block(fields, ("fields",), self.source_model, self.target_model, in_each=False, target_prefix="")

    def block(
        self,
        fields: Any,
        path: YamlPath,
        source_model: type[BaseModel] | None,
        target_model: type[BaseModel] | None,
        *,
        in_each: bool,
        target_prefix: str,
        index_keys: list[tuple[str, int]] | None = None,
    ) -> BlockFn:
        if not isinstance(fields, dict) or not fields:
            self.log.add("a fields block must be a non-empty mapping of target field → spec", path)
            return _empty_block
        tree: dict[str, Any] = {}
        for key, spec in fields.items():
            where = (*path, key)
            try:
                parts = split_path(key)
            except ValueError:
                self.log.add(f"target path {key!r} has an empty part", where, "write e.g. address.city", key=True)
                continue
            if not parts:
                self.log.add("'.' is not a target field name", where, key=True)
                continue
            if any(is_index(p) for p in parts):
                self.log.add(
                    f"target path {key!r} indexes a list",
                    where,
                    "build lists with a list of item blocks or with each:",
                    key=True,
                )
                continue
            node = tree
            ok = True
            for part in parts[:-1]:
                existing = node.get(part)
                if isinstance(existing, _Leaf):
                    self.log.add(
                        f"{key!r} writes inside {part!r}, which is already mapped as a whole",
                        where,
                        f"map either {part!r} or its parts, not both",
                        key=True,
                    )
                    ok = False
                    break
                node = node.setdefault(part, {})
            if not ok:
                continue
            last = parts[-1]
            if last in node:
                self.log.add(f"{key!r} is mapped twice (also via a dotted path)", where, key=True)
                continue
            node[last] = _Leaf(spec, where)
        return self._tree(tree, path, source_model, target_model, in_each, target_prefix, index_keys)

    def _tree(
        self,
        tree: dict[str, Any],
        path: YamlPath,
        source_model: type[BaseModel] | None,
        target_model: type[BaseModel] | None,
        in_each: bool,
        target_prefix: str,
        index_keys: list[tuple[str, int]] | None,
    ) -> BlockFn:
        entries: list[tuple[str, FieldFn, bool]] = []
        target_fields = target_model.model_fields if target_model is not None else None
        for name, node in tree.items():
            target_path = f"{target_prefix}{name}"
            where = node.path if isinstance(node, _Leaf) else self._first_leaf_path(node)
            shape: _Shape | None = None
            if target_fields is not None and target_model is not None:
                info = target_fields.get(name)
                if info is None:
                    self.log.add(
                        f"{target_model.__name__} has no field {name!r}",
                        where,
                        did_you_mean(name, target_fields),
                        key=True,
                    )
                    continue
                shape = _shape(info.annotation)
            if isinstance(node, dict):
                sub_model = None
                if shape is not None:
                    if shape.kind != "model":
                        self.log.add(f"{target_path!r} is not an object, so it has no sub-fields", where, key=True)
                        continue
                    sub_model = shape.model
                sub = self._tree(node, path, source_model, sub_model, in_each, f"{target_path}.", None)
                entries.append((name, _object_field(sub), getattr(sub, "may_be_empty", True)))
                continue
            if (
                index_keys is not None
                and isinstance(node.spec, dict)
                and "index" in node.spec
                and not ({"each", "fields"} & node.spec.keys())
            ):
                start = self._index_start(node, in_each)
                if start is not None:
                    index_keys.append((name, start))
                continue
            fn = self.leaf(node, source_model, shape, in_each, target_path)
            if fn is not None:
                entries.append((name, fn, not getattr(fn, "never_omits", False)))
        if target_model is not None:
            mapped = set(tree) | {k for k, _ in index_keys or []}
            for name, info in target_model.model_fields.items():
                if info.is_required() and name not in mapped:
                    self.log.add(
                        f"required field {target_prefix + name!r} of {target_model.__name__} is not mapped",
                        path,
                        f"map it ({name}: <source path>) or give a fixed value ({name}: {{const: ...}})",
                        key=True,
                    )
        return _block(tuple(entries))

    def _first_leaf_path(self, tree: dict[str, Any]) -> YamlPath:
        for node in tree.values():
            return node.path if isinstance(node, _Leaf) else self._first_leaf_path(node)
        return ()

    def _index_start(self, node: _Leaf, in_each: bool) -> int | None:
        spec = node.spec
        if not in_each or len(spec) != 1:
            self.log.add(
                "index: gives the position in an each: list and stands alone"
                if in_each
                else "index: only makes sense inside an each: block",
                node.path,
                "line_number: {index: 1}",
            )
            return None
        start = spec["index"]
        if isinstance(start, bool) or not isinstance(start, int):
            self.log.add("index: takes the whole number to start counting at", (*node.path, "index"), "index: 1")
            return None
        return start

    # -- leaves -----------------------------------------------------------------------------
    def leaf(
        self,
        node: _Leaf,
        source_model: type[BaseModel] | None,
        shape: _Shape | None,
        in_each: bool,
        target_path: str,
    ) -> FieldFn | None:
        spec, path = node.spec, node.path
        if isinstance(spec, str):
            if self.check_source_path(spec, path, source_model):
                getter = make_getter(spec, self.missing)
                if self.missing is None:
                    getter.never_omits = True  # type: ignore[attr-defined]
                return _fast(getter, single_key(spec), None, missing=self.missing)
            return None
        if isinstance(spec, list):
            return self.item_list(spec, path, source_model, shape, in_each, target_path)
        if isinstance(spec, dict):
            if "each" in spec or "fields" in spec:
                return self.each(spec, path, source_model, shape, target_path)
            return self.field_spec(spec, path, source_model, target_path, in_each)
        self.log.add(
            f"a field spec must be a source path, a {{from: ..}} block, a list or an each: block; "
            f"got {show_value(spec)}",
            path,
            "YAML reads yes/no/on/off/true/false as booleans: quote a source path named like that ('no')"
            if isinstance(spec, bool)
            else f"for a fixed value write {{const: {spec!r}}}"
            if spec is not None
            else "remove the field or give {const: null}",
        )
        return None

    def item_list(
        self,
        spec: list[Any],
        path: YamlPath,
        source_model: type[BaseModel] | None,
        shape: _Shape | None,
        in_each: bool,
        target_path: str,
    ) -> FieldFn | None:
        item_model = None
        if shape is not None:
            if shape.kind not in ("list", "list_model"):
                self.log.add(f"{target_path!r} is not a list, so it cannot be built from a list of items", path)
                return None
            item_model = shape.model
        if not spec:
            self.log.add("a list of item blocks must not be empty", path, "give at least one item, or {const: []}")
            return None
        blocks = []
        for i, item in enumerate(spec):
            blocks.append(
                self.block(
                    item,
                    (*path, i),
                    source_model,
                    item_model,
                    in_each=in_each,
                    target_prefix=f"{target_path}[{i}].",
                )
            )
        frozen = tuple((b, _constant_keys(b)) for b in blocks)

        def items(record: Any, ctx: Any) -> Any:
            """The item blocks that found something in the record: an item whose every read
            field is absent (only its constants are left) says nothing, and is left out."""
            out = []
            for block, constants in frozen:
                item = block(record, ctx)
                if constants is None or not item.keys() <= constants:
                    out.append(item)
            return out if out else OMIT

        return items

    def each(
        self,
        spec: dict[str, Any],
        path: YamlPath,
        source_model: type[BaseModel] | None,
        shape: _Shape | None,
        target_path: str,
    ) -> FieldFn | None:
        if "each" not in spec:
            self.log.add(
                "fields: without each: — which source list should be mapped?",
                (*path, "fields"),
                "add each: <source list path>, or write the fields as dotted target paths",
                key=True,
            )
            return None
        if "fields" not in spec:
            self.log.add(
                "each: without fields: — what should each item become?",
                (*path, "each"),
                "add fields: {target: source, ...} read from each source item",
                key=True,
            )
            return None
        try:
            parsed = EachSpec.model_validate(spec)
        except ValidationError as exc:
            self.log.extend(problems_from_validation(exc, self.doc, path, EachSpec))
            return None
        item_model = None
        if shape is not None:
            if shape.kind not in ("list", "list_model"):
                self.log.add(f"{target_path!r} is not a list, so each: cannot build it", path, key=True)
                return None
            item_model = shape.model
        if not self.check_source_path(parsed.each, (*path, "each"), source_model):
            return None
        if parsed.merge_key is not None:
            self.merge_key(parsed.merge_key, parsed.fields, (*path, "merge_key"), target_path)
        missing = self.missing if "on_missing" not in parsed.model_fields_set else _missing_value(parsed.on_missing)
        item_source = self.list_item_model(parsed.each, source_model)
        keep = self.condition(parsed.when, (*path, "when"), item_source) if parsed.when is not None else None
        index_keys: list[tuple[str, int]] = []
        block = self.block(
            parsed.fields,
            (*path, "fields"),
            item_source,
            item_model,
            in_each=True,
            target_prefix=f"{target_path}[].",
            index_keys=index_keys,
        )
        built = _each_field(
            make_getter(parsed.each, missing), block, keep, tuple(index_keys), self.mapping_id, target_path
        )
        if missing is None:
            built.never_omits = True  # type: ignore[attr-defined]
        return built

    def merge_key(self, key: Any, fields: dict[str, Any], where: YamlPath, target_path: str) -> None:
        """A merge key must be one of the item's own fields, and the list a top-level field."""
        if not isinstance(key, str) or key not in fields:
            self.log.add(
                f"merge_key {key!r} is not a field of the items of {target_path!r}",
                where,
                did_you_mean(str(key), fields) or "name one of the item fields under fields:",
            )
            return
        if "." in target_path or "[" in target_path:
            self.log.add(
                f"merge_key on {target_path!r}: only a top-level list of the output is merged by the writer",
                where,
                "map the list as a top-level field of the target",
            )
            return
        self.merge_keys[target_path] = key

    def field_spec(
        self,
        spec: dict[str, Any],
        path: YamlPath,
        source_model: type[BaseModel] | None,
        target_path: str,
        in_each: bool,
    ) -> FieldFn | None:
        if not any(key in FIELD_SPEC_KEYS for key in spec):
            names = ", ".join(repr(k) for k in spec)
            self.log.add(
                f"{names}: not field spec keys; a field spec has from:, const: or index:",
                path,
                "to build a nested object write dotted target paths, e.g. "
                f"{target_path}.{next(iter(spec))}: <source path>",
            )
            return None
        try:
            parsed = FieldSpec.model_validate(spec)
        except ValidationError as exc:
            self.log.extend(problems_from_validation(exc, self.doc, path, FieldSpec))
            return None
        given = parsed.model_fields_set
        origins = [k for k in ("from_", "const", "index") if k in given]
        if len(origins) != 1:
            names = ", ".join("from" if k == "from_" else k for k in origins)
            self.log.add(
                f"give exactly one of from:, const: or index: (got {names or 'none'})",
                path,
                "from: <source path> reads the record; const: <value> is fixed; index: 1 counts each: items",
            )
            return None
        if "index" in given:
            self.log.add(
                "index: only makes sense inside an each: block"
                if not in_each
                else "index: gives the position in an each: list and stands alone",
                path,
                "line_number: {index: 1}",
            )
            return None
        before = len(self.log)
        missing = self.missing if "on_missing" not in given else _missing_value(parsed.on_missing)
        if parsed.transform is not None and _none_aware(parsed.transform):
            missing = None  # default(..), required and count are about a missing value: they see it as null
        get: Callable[..., Any]
        key: str | None = None
        if "const" in given:
            get = _const(parsed.const)
        else:
            sources = parsed.from_
            if isinstance(sources, str):
                self.check_source_path(sources, (*path, "from"), source_model)
                get = make_getter(sources, missing)
                key = single_key(sources)
            else:
                assert sources is not None
                if not sources:
                    self.log.add("from: [] lists no source paths", (*path, "from"))
                for i, p in enumerate(sources):
                    self.check_source_path(p, (*path, "from", i), source_model)
                get = _many(tuple(make_getter(p, missing) for p in sources if p), missing)
        missing_ok = "default" in given or parsed.optional
        site = StepSite(self.mapping_id, target_path, missing_ok)
        steps: tuple[StepFn, ...] = ()
        labels: tuple[str, ...] = ()
        if parsed.transform is not None:
            steps, labels = self.pipeline(parsed.transform, (*path, "transform"), site)
        when = self.condition(parsed.when, (*path, "when"), source_model) if parsed.when is not None else None
        table = None
        if parsed.values is not None:
            if not parsed.values:
                self.log.add("values: is empty", (*path, "values"), "map source values: {gold: A, silver: B}")
            table = dict(parsed.values)
        elif "otherwise" in given:
            self.log.add("otherwise: without values:", (*path, "otherwise"), "add values: {from: to, ...}", key=True)
        if len(self.log) > before:
            return None
        return _general_field(
            mapping=self.mapping_id,
            target=target_path,
            get=get,
            key=key,
            steps=steps,
            labels=labels,
            table=table,
            otherwise=parsed.otherwise if "otherwise" in given else _MISSING,
            default=parsed.default if "default" in given else _MISSING,
            required=parsed.required,
            when=when,
            missing=missing,
            fill_missing=not ("on_missing" in given and parsed.on_missing == "omit"),
        )

    def pipeline(self, text: str, path: YamlPath, site: StepSite) -> tuple[tuple[StepFn, ...], tuple[str, ...]]:
        try:
            parsed = parse_pipeline(text)
        except PipelineSyntaxError as exc:
            self.log.add(
                f"transform {text!r}: {exc}",
                path,
                "write steps like trim | upper | decimal(2); arguments are words, numbers or 'quoted'",
            )
            return (), ()
        steps: list[StepFn] = []
        labels: list[str] = []
        for step in parsed:
            fn = self.step(step, text, path, site)
            if fn is not None:
                steps.append(fn)
                labels.append(step.describe())
        return tuple(steps), tuple(labels)

    def step(self, step: Step, text: str, path: YamlPath, site: StepSite) -> StepFn | None:
        definition = find_transform(step.name)
        if definition is None:
            hint = PLUGIN_PROBLEMS.get(step.name) or did_you_mean(step.name, TRANSFORMS)
            self.log.add(f"unknown transform {step.name!r} in {text!r}", path, hint)
            return None
        params = definition.params
        required = sum(1 for p in params if not p.optional)
        if not required <= len(step.args) <= len(params):
            count = f"{required}" if required == len(params) else f"{required} to {len(params)}"
            self.log.add(
                f"{step.name} takes {count} argument{'s' if len(params) != 1 else ''}, got {len(step.args)}",
                path,
                f"write {definition.signature}: {definition.summary}",
            )
            return None
        values = []
        try:
            for arg, param in zip(step.args, params, strict=False):
                values.append(coerce_arg(arg, param))
            if definition.needs_site:
                return definition.factory(*values, site=site)
            return definition.factory(*values)
        except PatternError as exc:
            self.log.add(f"{step.describe()}: {exc}", path, exc.hint)
            return None
        except ValueError as exc:
            self.log.add(f"{step.describe()}: {exc}", path, f"write {definition.signature}: {definition.summary}")
            return None


# ----- runtime closures ---------------------------------------------------------------------
def _empty_block(record: Any, ctx: Any) -> dict[str, Any]:
    return {}


_CALL, _READ, _READ_STEP, _CONST, _READ_STEP_DEFAULT = range(5)

# False compiles every object as a plain loop over its field closures: the reference behaviour
# the generated functions are tested against (tests/mapping/test_generated_code.py).
GENERATE_CODE = True


def _fast(
    fn: FieldFn, key: str | None, step: StepFn | None, default: Any = _MISSING, missing: Any = OMIT
) -> FieldFn:
    """Mark a field that the block may run inline: `record.get(key, missing)`, through one
    `step`, then `default` for a None/empty result."""
    if key is not None:
        fn.fast = (key, step, default, missing)  # type: ignore[attr-defined]
    return fn


def _const(value: Any) -> FieldFn:
    def const(record: Any, ctx: Any = None) -> Any:
        return value

    const.const = value  # type: ignore[attr-defined]
    const.never_omits = True  # type: ignore[attr-defined]
    return const


def _many(getters: tuple[Callable[..., Any], ...], missing: Any) -> Callable[..., Any]:
    """`from: [a, b]`: a list of the values; absent when every path is absent, else absent
    members read as null (the list keeps its positions)."""
    if missing is None:
        return lambda record, ctx=None: [g(record) for g in getters]

    def many(record: Any, ctx: Any = None) -> Any:
        values = [g(record) for g in getters]
        if all(v is OMIT for v in values):
            return OMIT
        return [None if v is OMIT else v for v in values]

    return many


def _none_aware(pipe: str) -> bool:
    """The pipe has a step that does something with a missing value (default, required, count)."""
    from middleware.mapping.transforms import NONE_AWARE

    try:
        return any(step.name in NONE_AWARE for step in parse_pipeline(pipe))
    except PipelineSyntaxError:
        return False


def _constant_keys(block: BlockFn) -> frozenset[str] | None:
    """The keys of an item block that are fixed values (None when it has nothing else)."""
    keys = getattr(block, "constant_keys", None)
    return keys if isinstance(keys, frozenset) else None


def _no_keys(key: str) -> None:
    return None


def _block(entries: tuple[tuple[str, FieldFn, bool], ...]) -> BlockFn:
    """Build one output object; entries are (key, field function, may leave the key out).

    Fields that read one key (optionally through one step and a default) or are constant run
    inline; when anything raises, the record is built again field by field with the full
    closures so that the error names the field, the step and the value.
    """
    inline: list[tuple[str, int, Any, Any, Any, Any]] = []
    for key, fn, _ in entries:
        fast = getattr(fn, "fast", None)
        if hasattr(fn, "const"):
            inline.append((key, _CONST, fn.const, None, None, None))  # type: ignore[attr-defined]
        elif fast is None:
            inline.append((key, _CALL, fn, None, None, None))
        elif fast[1] is None and fast[2] is _MISSING:
            inline.append((key, _READ, fast[0], None, None, fast[3]))
        elif fast[2] is _MISSING:
            inline.append((key, _READ_STEP, fast[1], fast[0], None, fast[3]))
        else:
            inline.append((key, _READ_STEP_DEFAULT, fast[1], fast[0], fast[2], fast[3]))
    rows = tuple(inline)
    may_omit = any(omit for _, _, omit in entries)
    constants = frozenset(key for key, fn, _ in entries if hasattr(fn, "const") or getattr(fn, "constant", False))
    # None: the block is all constants (it always says something); else its constant keys
    constant_keys = None if len(constants) == len(entries) else constants

    def careful(record: Any, ctx: Any) -> dict[str, Any]:
        out = {}
        for key, fn, _ in entries:
            value = fn(record, ctx)
            if value is not OMIT:
                out[key] = value
        return out

    if not GENERATE_CODE:
        careful.may_be_empty = all(omit for _, _, omit in entries)  # type: ignore[attr-defined]
        careful.constant_keys = constant_keys  # type: ignore[attr-defined]
        return careful
    build = _generate_block(rows, careful, may_omit)
    build.may_omit = may_omit  # type: ignore[attr-defined]
    build.may_be_empty = all(omit for _, _, omit in entries)  # type: ignore[attr-defined]
    build.constant_keys = constant_keys  # type: ignore[attr-defined]
    return build


def _without_omitted(out: dict[str, Any]) -> dict[str, Any]:
    """An object without its left-out keys (generated blocks call it for nested items)."""
    return {k: v for k, v in out.items() if v is not OMIT} if _OMIT_ID in map(id, out.values()) else out


def _object_or_omit(out: dict[str, Any]) -> Any:
    """A nested object without its left-out keys; left out itself when nothing is left."""
    if _OMIT_ID in map(id, out.values()):
        out = {k: v for k, v in out.items() if v is not OMIT}
    return out if out else OMIT


Row = tuple[str, int, Any, Any, Any, Any]
# `id` in `map(id, ...)`: an identity scan in C; `OMIT in values()` would ask each Decimal's __eq__
_FILTER_OMITTED = (
    "    if OMIT_ID in map(id, out.values()):\n        return {k: v for k, v in out.items() if v is not OMIT}\n"
)


def _generate_block(rows: tuple[Row, ...], careful: BlockFn, may_omit: bool) -> BlockFn:
    """One Python function that builds the whole object with a single dict display.

    This is code generation, not evaluation of user text: the generated source contains only
    identifiers we make up (`k0`, `s0`, `f0`, ...). Every key, source path, constant and
    transform from the YAML is passed in as a value of the function's namespace, so nothing an
    integrator writes is ever parsed as Python. It runs about twice as fast as a loop that
    dispatches per field, which is what lets the engine map tens of thousands of orders a second.
    """
    namespace: dict[str, Any] = {
        "IsthmusError": IsthmusError,
        "careful": careful,
        "no_keys": _no_keys,
        "Decimal": Decimal,
        "ROUND_HALF_UP": ROUND_HALF_UP,
        "OMIT": OMIT,
        "OMIT_ID": id(OMIT),
        "nz": _object_or_omit,
        "dr": _without_omitted,
    }
    display = _display(rows, namespace, "", "record", "get")
    source = (
        "def build(record, ctx):\n"
        "    get = record.get if type(record) is dict else (record.get if isinstance(record, dict) else no_keys)\n"
        "    try:\n"
        "        out = " + display + "\n"
        "    except IsthmusError:\n"
        "        raise\n"
        "    except Exception:\n"
        "        return careful(record, ctx)\n"
        + (_FILTER_OMITTED if may_omit else "")
        + "    return out\n"
    )
    exec(compile(source, "<isthmus mapping block>", "exec"), namespace)  # noqa: S102 - see docstring
    built: BlockFn = namespace["build"]
    built.rows = rows  # type: ignore[attr-defined]
    return built


def _display(
    rows: tuple[Row, ...],
    namespace: dict[str, Any],
    tag: str,
    record: str,
    get: str,
    extra: tuple[str, ...] = (),
) -> str:
    """The source of one dict display building an object from `record` (read with `get`).

    Generated names are a prefix plus a tag of digits, `o` and `_` (the field's position,
    nested): globals k c f s d g a L ik rf ra rb vk vt; locals v w m ls dd dq rx vv and the
    comprehension's pos item get. No prefix is another followed by a tag character, so names
    never collide. Fixed names: OMIT OMIT_ID nz dr (and the ones of `_generate_block`).

    A read passes `get` the value for an absent key (`OMIT` unless the field says null), so a
    field the record does not carry leaves its key out; transforms never see OMIT.

    A nested list (`each:`) whose items need no filtering becomes a list comprehension inside
    the display, so an order and its lines are built by one generated function.
    """
    items: list[str] = []
    for index, (key, kind, a, b, default, missing) in enumerate(rows):
        t = f"{tag}{index}"
        namespace[f"k{t}"] = key
        absent = "" if missing is None else ", OMIT"
        if kind == _CONST:
            namespace[f"c{t}"] = a
            items.append(f"k{t}: c{t}")
        elif kind == _CALL:
            namespace[f"f{t}"] = a
            expr = (
                _inline_each(a, namespace, t, record)
                or _inline_object(a, namespace, t, record, get)
                or _inline_call(a, namespace, t, record, get)
                or f"f{t}({record}, ctx)"
            )
            items.append(f"k{t}: {expr}")
        elif kind == _READ:
            namespace[f"s{t}"] = a
            items.append(f"k{t}: {get}(s{t}{absent})")
        elif kind == _READ_STEP:
            namespace[f"f{t}"], namespace[f"s{t}"] = a, b
            read = f"{get}(s{t}{absent})"
            expr = _inline_steps(a, read, t, namespace) or _call_step(t, read, missing)
            items.append(f"k{t}: {expr}")
        else:
            namespace[f"s{t}"], namespace[f"d{t}"] = b, default
            read = f"{get}(s{t}{absent})"
            if a is not None:
                namespace[f"f{t}"] = a
                read = _inline_steps(a, read, t, namespace) or _call_step(t, read, missing)
            fills = "" if missing is None or default is None else f" or w{t} is OMIT"
            items.append(f'k{t}: (d{t} if (w{t} := {read}) is None{fills} or w{t} == "" else w{t})')
    return "{" + ", ".join([*items, *extra]) + "}"


def _call_step(t: str, read: str, missing: Any) -> str:
    """`f(read, ctx)` for a step that is not inlined; an absent value stays absent."""
    if missing is None:
        return f"f{t}({read}, ctx)"
    return f"(OMIT if (m{t} := {read}) is OMIT else f{t}(m{t}, ctx))"


def _inline_object(fn: Any, namespace: dict[str, Any], t: str, record: str, get: str) -> str | None:
    """A nested object (dotted target paths) read from the same record, as a nested display.

    Only when none of its fields can be left out: then it is never empty, so it never turns
    into OMIT, and building it in place is exactly what `_object_field` would do."""
    block = getattr(fn, "inline_block", None)
    rows = getattr(block, "rows", None)
    if not rows:
        return None
    display = _display(rows, namespace, f"{t}o", record, get)
    return f"nz({display})" if getattr(block, "may_omit", True) else display


def _inline_read(fn: Any, namespace: dict[str, Any], t: str, record: str, get: str) -> str | None:
    """`a.b` read in place when `a` is an object; the getter itself for anything else."""
    parts = getattr(fn, "parts", None)
    if parts is None:
        return None
    namespace[f"rf{t}"], namespace[f"ra{t}"], namespace[f"rb{t}"] = fn, parts[0], parts[1]
    absent = "" if getattr(fn, "missing", None) is None else ", OMIT"
    return f"(rx{t}.get(rb{t}{absent}) if type(rx{t} := {get}(ra{t})) is dict else rf{t}({record}))"


def _inline_call(fn: Any, namespace: dict[str, Any], t: str, record: str, get: str) -> str | None:
    """A dotted read, alone or followed by inlinable transforms, or a plain value map, in place."""
    lookup = getattr(fn, "lookup", None)
    if lookup is not None:
        # a text value found in the table maps in place; anything else (other types, a value
        # not in the table, `otherwise:`, the error) is the closure's business
        namespace[f"vk{t}"], namespace[f"vt{t}"] = lookup
        return f"(vt{t}[vv{t}] if type(vv{t} := {get}(vk{t})) is str and vv{t} in vt{t} else f{t}({record}, ctx))"
    read = _inline_read(fn, namespace, t, record, get)
    if read is not None:
        return read
    pair = getattr(fn, "read_then", None)
    if pair is None:
        return None
    getter, step = pair
    read = _inline_read(getter, namespace, t, record, get)
    if read is None:
        return None
    return _inline_steps(step, read, t, namespace)


def _inline_each(fn: Any, namespace: dict[str, Any], t: str, record: str) -> str | None:
    """`[{...} for each item]` for an `each:` field built by `_each_field`, else None."""
    spec = getattr(fn, "inline_each", None)
    if spec is None:
        return None
    list_items, inner, index_key, start = spec
    inner_rows = getattr(inner, "rows", None)
    if inner_rows is None:
        return None
    namespace[f"L{t}"], namespace[f"ik{t}"] = list_items, index_key
    body = _display(inner_rows, namespace, f"{t}_", f"item{t}", f"get{t}", (f"ik{t}: pos{t}",))
    if getattr(inner, "may_omit", True):  # filtered only when a key was left out (a C-level check)
        body = f"(dr(dd{t}) if OMIT_ID in map(id, (dd{t} := {body}).values()) else dd{t})"
    return (
        f"(OMIT if (ls{t} := L{t}({record})) is OMIT else "
        f"[{body} for pos{t}, item{t} in enumerate(ls{t}, {int(start)}) for get{t} in (item{t}.get,)])"
    )


_INLINE_METHODS = frozenset({"upper", "lower", "strip"})


def _inline_steps(fn: Any, read: str, tag: str, namespace: dict[str, Any]) -> str | None:
    """An expression doing `fn`'s steps on `read` inline for str inputs, or None if it can't.

    Each step that declares `inline` (see transforms.py) becomes `(fast if type(v) is str else
    step(v, ctx))`, so any other input still runs the real step with its checks and errors.
    Only names made here and method names from a fixed set go into the source.
    """
    steps = getattr(fn, "steps", None) or (fn,)
    if not all(hasattr(step, "inline") for step in steps):
        return None
    expr = read
    for n, step in enumerate(steps):
        kind, argument = step.inline
        v, g, arg = f"v{tag}_{n}", f"g{tag}_{n}", f"a{tag}_{n}"
        namespace[g], namespace[arg] = step, argument
        if kind == "method" and argument in _INLINE_METHODS:
            fast = f"{v}.{argument}()"
        elif kind == "prefix":
            fast = f"{arg} + {v}"
        elif kind == "suffix":
            fast = f"{v} + {arg}"
        elif kind == "decimal":
            q = f"dq{tag}_{n}"
            fast = (
                f"({q} if {v} and ({q} := Decimal({v}).quantize({arg}, ROUND_HALF_UP)).is_finite() else {g}({v}, ctx))"
            )
        else:
            return None
        expr = f"({fast} if type({v} := {expr}) is str else ({v} if {v} is OMIT else {g}({v}, ctx)))"
    return expr


def _object_field(block: BlockFn) -> FieldFn:
    def build_object(record: Any, ctx: Any) -> Any:
        out = block(record, ctx)
        return out if out else OMIT

    build_object.inline_block = block  # type: ignore[attr-defined]
    if getattr(block, "constant_keys", ()) is None:
        build_object.constant = True  # type: ignore[attr-defined]  # all fixed values: always there
    return build_object


def _each_field(
    get: Callable[..., Any],
    block: BlockFn,
    keep: Predicate | None,
    index_keys: tuple[tuple[str, int], ...],
    mapping: str,
    target: str,
) -> FieldFn:
    def list_items(record: Any) -> Any:
        """The source list; null reads as empty, absent as OMIT (unless the getter reads absent as
        null), anything but a list is a MappingError."""
        items = get(record)
        if type(items) is list:
            return items
        if items is None:
            return []
        if items is OMIT:
            return OMIT
        if isinstance(items, list):
            return items
        raise MappingError(
            f"each: expects a list, got {type(items).__name__} {show_value(items)}",
            mapping=mapping,
            field=target,
        )

    if keep is None and len(index_keys) == 1:
        key, start = index_keys[0]

        def each_numbered(record: Any, ctx: Any) -> Any:
            out = []
            items = list_items(record)
            if items is OMIT:
                return OMIT
            for position, item in enumerate(items, start):
                mapped = block(item, ctx)
                mapped[key] = position
                out.append(mapped)
            return out

        each_numbered.inline_each = (list_items, block, key, start)  # type: ignore[attr-defined]
        return each_numbered

    def each(record: Any, ctx: Any) -> Any:
        out = []
        position = 0
        items = list_items(record)
        if items is OMIT:
            return OMIT
        for item in items:
            if keep is not None and not keep(item, ctx):
                continue
            mapped = block(item, ctx)
            for index_key, start in index_keys:
                mapped[index_key] = start + position
            out.append(mapped)
            position += 1
        return out

    return each


def _general_field(
    *,
    mapping: str,
    target: str,
    get: Callable[..., Any],
    key: str | None,
    steps: tuple[StepFn, ...],
    labels: tuple[str, ...],
    table: dict[str, Any] | None,
    otherwise: Any,
    default: Any,
    required: bool,
    when: Predicate | None,
    missing: Any = OMIT,
    fill_missing: bool = True,
) -> FieldFn:
    """The closure for one `{from|const: ...}` field, specialised for the common shapes.

    `get` gives `missing` for an absent source path: OMIT leaves the field out (unless a
    non-null `default:` fills it, which an explicit `on_missing: omit` forbids, or `required:
    true` refuses it); None treats it as null."""
    has_default = default is not _MISSING
    fills_missing = has_default and default is not None and fill_missing
    run: StepFn | None
    if not steps:
        run = None
    elif len(steps) == 1:
        run = steps[0]
    elif len(steps) == 2:
        first, second = steps

        def run(value: Any, ctx: Any) -> Any:
            return second(first(value, ctx), ctx)

        run.steps = steps  # type: ignore[attr-defined]

    elif len(steps) == 3:
        first, second, third = steps

        def run(value: Any, ctx: Any) -> Any:
            return third(second(first(value, ctx), ctx), ctx)

        run.steps = steps  # type: ignore[attr-defined]

    else:

        def run(value: Any, ctx: Any) -> Any:
            for step in steps:
                value = step(value, ctx)
            return value

    def fail(value: Any, ctx: Any, exc: Exception) -> MappingError:
        return MappingError(_explain(steps, labels, value, ctx, exc), mapping=mapping, field=target)

    simple = table is None and not has_default and not required and when is None
    if simple and run is None:
        if hasattr(get, "const"):
            return get
        if missing is None:
            get.never_omits = True  # type: ignore[attr-defined]
        return _fast(get, key, None, missing=missing)
    if simple and run is not None and key is not None:
        step = run

        def keyed_transform(record: Any, ctx: Any) -> Any:
            try:
                value = record.get(key, missing)
            except AttributeError:
                value = None
            if value is OMIT:
                return OMIT
            try:
                return step(value, ctx)
            except IsthmusError:
                raise
            except Exception as exc:
                raise fail(value, ctx, exc) from exc

        if missing is None:
            keyed_transform.never_omits = True  # type: ignore[attr-defined]
        return _fast(keyed_transform, key, step, missing=missing)
    if simple and run is not None:
        step = run

        def transformed(record: Any, ctx: Any) -> Any:
            value = get(record)
            if value is OMIT:
                return OMIT
            try:
                return step(value, ctx)
            except IsthmusError:
                raise
            except Exception as exc:
                raise fail(value, ctx, exc) from exc

        transformed.read_then = (get, step)  # type: ignore[attr-defined]  # lets the compiler inline it
        if missing is None:
            transformed.never_omits = True  # type: ignore[attr-defined]
        return transformed

    shown_keys = ", ".join(sorted(table)) if table else ""
    defaults_only = table is None and has_default and not required and when is None and len(steps) <= 1

    def general(record: Any, ctx: Any) -> Any:
        if when is not None and not when(record, ctx):
            return OMIT
        value = get(record)
        if value is OMIT:
            if fills_missing:
                return default
            if required:
                raise MappingError(
                    "a value is required but the source is missing or empty", mapping=mapping, field=target
                )
            return OMIT
        if run is not None:
            try:
                value = run(value, ctx)
            except IsthmusError:
                raise
            except Exception as exc:
                raise fail(get(record), ctx, exc) from exc
        if table is not None and value is not None:
            hit = table.get(value if type(value) is str else (key_text(value) or ""), _MISSING)
            if hit is _MISSING:
                if otherwise is _MISSING:
                    raise MappingError(
                        f"value {show_value(value)} is not in values: ({shown_keys}) and there is no otherwise:",
                        mapping=mapping,
                        field=target,
                    )
                hit = otherwise
            value = hit
        if has_default and (value is None or value == ""):
            value = default
        if required and (value is None or value == ""):
            raise MappingError("a value is required but the source is missing or empty", mapping=mapping, field=target)
        return value

    if when is None and (missing is None or fills_missing or required):
        general.never_omits = True  # type: ignore[attr-defined]
    if defaults_only and (fills_missing or default is None or missing is None):
        return _fast(general, key, run, default, missing)
    if table is not None and key is not None and run is None and not has_default and not required and when is None:
        general.lookup = (key, table)  # type: ignore[attr-defined]  # a plain value map: inlinable
    return general


def _explain(steps: tuple[StepFn, ...], labels: tuple[str, ...], value: Any, ctx: Any, exc: Exception) -> str:
    """Which step failed on which value, found by re-running the steps (only on failure)."""
    current = value
    for step, label in zip(steps, labels, strict=True):
        try:
            current = step(current, ctx)
        except Exception as failure:
            return f"{label} cannot handle {show_value(current)}: {_reason(failure)}"
    return f"transform failed on {show_value(value)}: {_reason(exc)}"


def _reason(exc: Exception) -> str:
    from decimal import InvalidOperation

    if isinstance(exc, InvalidOperation):
        return "not a number"
    return str(exc) or type(exc).__name__


__all__ = [
    "OMIT",
    "SELF_PATH",
    "CompiledMapping",
    "MappingChain",
    "check_chain",
    "compile_document",
    "compose",
    "entity_model",
    "validate_output",
]
