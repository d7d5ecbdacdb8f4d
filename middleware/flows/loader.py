"""Flow files → compiled flows, every problem reported at once with `file:line:col` and a hint.

Checked at load, before any message: the file's shape (unknown keys, with the nearest valid
names), unique step names, conditions (the mapping engine's condition language, with context
paths checked: `steps.<name>` must be a step, `signals.<name>` a declared signal), inline
fields (compiled by the mapping compiler itself), templates, mapping ids and that a chain
fits, target systems and entities that can write, adapter operations, signal names, where
rules go (`before:`/`after:` a step), and that compensations and error handlers do not wait.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from middleware.adapter import WriteKeys, load_adapter_class, operations_of
from middleware.errors import ConfigError, Problem, SourceLocation
from middleware.mapping import MappingSet, compile_document, entity_model
from middleware.mapping.conditions import compile_condition, key_text
from middleware.mapping.paths import make_getter, split_path
from middleware.mapping.problemlog import ProblemLog
from middleware.message import MESSAGE_TYPE_PATTERN
from middleware.problems import did_you_mean, problems_from_validation, render_path
from middleware.yamlsource import YamlDocument, YamlPath, load_yaml_file

from .model import CONTEXT_ROOTS, CompiledFlow, CompiledStep, Predicate, RecordBuilder, StepAction, Template
from .spec import STEP_MODELS, FlowFileSpec, PluginStep, RecordSpec, StepCommon, XrefSpec
from .steps import (
    BUILTIN_KINDS,
    PLUGIN_PROBLEMS,
    Call,
    Emit,
    Ensure,
    Fail,
    Plugin,
    RuleGate,
    Target,
    WaitFor,
    Write,
    XrefRef,
    plugin_kinds,
)

if TYPE_CHECKING:
    from middleware.config import LoadedConfig

FLOW_SUFFIXES = (".yaml", ".yml")
Systems = Mapping[str, tuple[str, BaseModel]]  # name → (adapter type, validated settings)


class FlowSet(Mapping[str, CompiledFlow]):
    """Compiled flows by name."""

    def __init__(self, flows: dict[str, CompiledFlow] | None = None) -> None:
        self._flows = dict(flows or {})

    def __getitem__(self, name: str) -> CompiledFlow:
        return self._flows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flows)

    def __len__(self) -> int:
        return len(self._flows)


def flow_files(paths: list[Path] | list[str]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(
                Problem(
                    "no such flow file or folder",
                    SourceLocation(str(path), 1, 1),
                    hint="check `flows:` in the config (relative paths start at the config file's folder)",
                )
            )
    return files, problems


def load_flows(paths: list[Path] | list[str], mappings: MappingSet, systems: Systems) -> tuple[FlowSet, list[Problem]]:
    """Every valid flow by name, and every problem of every file."""
    files, problems = flow_files(paths)
    flows: dict[str, CompiledFlow] = {}
    for file in files:
        try:
            doc = load_yaml_file(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        flow, found = compile_flow(doc, mappings, systems)
        problems.extend(found)
        if flow is None:
            continue
        if flow.name in flows:
            problems.append(
                Problem(
                    f"flow name {flow.name!r} is already used",
                    doc.locate(("flow",)),
                    "flow",
                    f"first defined in {flows[flow.name].file}; flow names must be unique",
                )
            )
            continue
        flows[flow.name] = flow
    return FlowSet(flows), problems


def check_flow_config(loaded: LoadedConfig, doc: YamlDocument, mappings: MappingSet) -> list[Problem]:
    """Problems of the config's flows and of the routes that target them (a feature check that
    `load_config` runs, registered in the entry-point group `isthmus.config_checks`)."""
    if not loaded.model.flows and not any(route.to.flow for route in loaded.model.routes):
        return []
    flows, problems = load_flows(loaded.flow_paths, mappings, loaded.systems)
    if problems:
        return problems
    for i, route in enumerate(loaded.model.routes):
        if route.to.flow is None:
            continue
        flow = flows.get(route.to.flow)
        if flow is None:
            hint = did_you_mean(route.to.flow, flows) or "add the flow's file or folder under `flows:`"
            problems.append(
                Problem(
                    f"no flow named {route.to.flow!r}",
                    doc.locate(("routes", i, "to", "flow")),
                    f"routes[{i}].to.flow",
                    hint,
                )
            )
        elif route.to.signal is not None and route.to.signal not in flow.signals:
            hint = did_you_mean(route.to.signal, flow.signals) or f"declare it under `signals:` in {flow.file}"
            problems.append(
                Problem(
                    f"flow {flow.name!r} has no signal {route.to.signal!r}",
                    doc.locate(("routes", i, "to", "signal")),
                    f"routes[{i}].to.signal",
                    hint,
                )
            )
    return problems


def build_flows(loaded: LoadedConfig) -> FlowSet:
    """The config's flows, compiled; ConfigError with every problem (the worker calls this once)."""
    from middleware.mapping import load_mappings

    flows, problems = load_flows(loaded.flow_paths, load_mappings(loaded.mapping_paths), loaded.systems)
    if problems:
        raise ConfigError(problems)
    return flows


def compile_flow(
    doc: YamlDocument, mappings: MappingSet, systems: Systems
) -> tuple[CompiledFlow | None, list[Problem]]:
    log = ProblemLog(doc)
    data = doc.data
    if not isinstance(data, dict):
        log.add("a flow file must be a YAML mapping with flow:, key: and steps:", ())
        return None, log.problems
    try:
        spec = FlowFileSpec.model_validate(data)
    except ValidationError as exc:
        log.extend(problems_from_validation(exc, doc, (), FlowFileSpec))
        return None, _sorted(log.problems)
    compiler = _FlowCompiler(doc, log, spec, mappings, systems)
    flow = compiler.compile()
    if log.problems:
        return None, _sorted(log.problems)
    return flow, []


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))


class _FlowCompiler:
    def __init__(
        self, doc: YamlDocument, log: ProblemLog, spec: FlowFileSpec, mappings: MappingSet, systems: Systems
    ) -> None:
        self.doc = doc
        self.log = log
        self.spec = spec
        self.mappings = mappings
        self.systems = systems
        self.steps: dict[str, CompiledStep] = {}
        self.names = self._declared_names()

    # ----- the whole flow ---------------------------------------------------------------------
    def _declared_names(self) -> set[str]:
        """Every step name written anywhere (so `steps.<name>` may refer forwards), duplicates reported."""
        seen: dict[str, YamlPath] = {}

        def note(name: Any, path: YamlPath) -> None:
            if not isinstance(name, str):
                return
            if name in seen:
                first = self.doc.locate(seen[name])
                self.log.add(
                    f"step name {name!r} is already used", path, f"first used at line {first.line}; rename one"
                )
            else:
                seen[name] = path

        def walk(raw: Any, path: YamlPath) -> None:
            if not isinstance(raw, dict):
                return
            note(raw.get("name"), (*path, "name"))
            comp = raw.get("compensate")
            if isinstance(comp, dict):
                note(comp.get("name") or f"undo_{raw.get('name')}", (*path, "compensate"))

        for i, raw in enumerate(self.spec.steps):
            walk(raw, ("steps", i))
        for i, rule in enumerate(self.spec.rules):
            note(rule.name, ("rules", i, "name"))
            for j, raw in enumerate(rule.steps):
                walk(raw, ("rules", i, "steps", j))
        for i, raw in enumerate(self.spec.on_error):
            walk(raw, ("on_error", i))
        return set(seen)

    def compile(self) -> CompiledFlow:
        spec = self.spec
        self.check_context_path(spec.key, ("key",), roots=False)
        when = self.condition(spec.when, ("when",), on_input=True) if spec.when is not None else None
        signals = {}
        for name, signal in spec.signals.items():
            self.check_context_path(signal.key, ("signals", name, "key"), roots=False)
            signals[name] = make_getter(signal.key) if self._path_ok(signal.key) else make_getter(".")
        steps = [s for i, raw in enumerate(spec.steps) if (s := self.step(raw, ("steps", i))) is not None]
        for i, rule in enumerate(spec.rules):
            self.place_rule(rule, i, steps)
        on_error = [s for i, raw in enumerate(spec.on_error) if (s := self.step(raw, ("on_error", i), may_wait=False))]
        return CompiledFlow(
            name=spec.flow,
            description=spec.description,
            file=self.doc.file,
            key_path=spec.key,
            key=make_getter(spec.key) if self._path_ok(spec.key) else make_getter("."),
            when=when,
            on_new_version=spec.on_new_version,
            signals=signals,
            steps=steps,
            on_error=on_error,
            by_name=dict(self.steps),
        )

    def place_rule(self, rule: Any, index: int, steps: list[CompiledStep]) -> None:
        path: YamlPath = ("rules", index)
        own = self.condition(rule.when, (*path, "when")) if rule.when is not None else None
        for j, changed in enumerate(rule.changes):
            if not self._path_ok(changed):
                self.log.add(f"'changes' takes record paths like tier; {changed!r} is not one", (*path, "changes", j))
        predicate = _rule_predicate(own, [make_getter(c) for c in rule.changes if self._path_ok(c)])
        gate = CompiledStep(rule.name, "rule", RuleGate(predicate), rule=rule.name, location=self._where(path))
        self.steps[rule.name] = gate
        compiled = [gate]
        for j, raw in enumerate(rule.steps):
            step = self.step(raw, (*path, "steps", j))
            if step is not None:
                step.rule = rule.name
                step.when = _gated(rule.name, step.when)
                compiled.append(step)
        names = [s.name for s in steps]
        if rule.before is not None and rule.after is not None:
            self.log.add("give either 'before:' or 'after:', not both", path)
            return
        anchor = rule.before if rule.before is not None else rule.after
        if anchor is None:
            steps.extend(compiled)
            return
        if anchor not in names:
            key = "before" if rule.before is not None else "after"
            self.log.add(f"no step {anchor!r} in the flow's steps", (*path, key), did_you_mean(anchor, names))
            return
        at = names.index(anchor) + (0 if rule.before is not None else 1)
        steps[at:at] = compiled

    # ----- one step -----------------------------------------------------------------------------
    def step(
        self, raw: dict[str, Any], path: YamlPath, *, may_wait: bool = True, default_name: str | None = None
    ) -> CompiledStep | None:
        if default_name is not None and isinstance(raw, dict) and "name" not in raw:
            raw = {"name": default_name, **raw}
        try:
            common = StepCommon.model_validate(raw)
        except ValidationError as exc:
            self.log.extend(problems_from_validation(exc, self.doc, path, StepCommon))
            return None
        plugins = plugin_kinds()
        if common.kind not in BUILTIN_KINDS and common.kind not in plugins:
            hint = PLUGIN_PROBLEMS.get(common.kind) or did_you_mean(common.kind, [*BUILTIN_KINDS, *plugins])
            self.log.add(f"unknown step kind {common.kind!r}", (*path, "kind"), hint)
            return None
        if common.kind == "wait_for" and not may_wait:
            self.log.add("a compensation or error handler cannot wait", (*path, "kind"), "use call, write or emit")
            return None
        model = STEP_MODELS.get(common.kind, PluginStep)
        try:
            parsed: Any = model.model_validate(raw)
        except ValidationError as exc:
            self.log.extend(problems_from_validation(exc, self.doc, path, model))
            return None
        action = self.action(common.kind, parsed, path, plugins)
        when = self.condition(common.when, (*path, "when")) if common.when is not None else None
        compensate = None
        if common.compensate is not None:
            compensate = self.step(
                common.compensate, (*path, "compensate"), may_wait=False, default_name=f"undo_{common.name}"
            )
        if action is None:
            return None
        step = CompiledStep(common.name, common.kind, action, when, compensate, location=self._where(path))
        self.steps[common.name] = step
        return step

    def action(self, kind: str, spec: Any, path: YamlPath, plugins: Mapping[str, Any]) -> StepAction | None:
        label = f"{self.spec.flow}_{spec.name}"
        if kind == "ensure":
            self.check_target(spec.target.system, spec.target.entity, (*path, "target"))
            xref = self.xref(spec.xref, (*path, "xref"))
            create = self.record(spec.create, (*path, "create"), label) if spec.create is not None else None
            if xref is None:
                return None
            key = self.write_key(spec.target.system, spec.target.entity)
            return Ensure(Target(spec.target.system, spec.target.entity), xref, create, key)
        if kind == "write":
            self.check_target(spec.target.system, spec.target.entity, (*path, "target"))
            xref = self.xref(spec.xref, (*path, "xref")) if spec.xref is not None else None
            record = self.record(spec, path, label)
            return Write(Target(spec.target.system, spec.target.entity), xref, record) if record else None
        if kind == "call":
            self.check_operation(spec.system, spec.operation, path)
            params = self.inline(spec.params, (*path, "params"), label, None) if spec.params else None
            return Call(spec.system, spec.operation, params)
        if kind == "wait_for":
            if spec.signal not in self.spec.signals:
                hint = did_you_mean(spec.signal, self.spec.signals) or "declare it under `signals:`"
                self.log.add(f"no signal {spec.signal!r} in this flow", (*path, "signal"), hint)
            until = self.condition(spec.until, (*path, "until")) if spec.until is not None else None
            return WaitFor(spec.signal, until)
        if kind == "emit":
            if not MESSAGE_TYPE_PATTERN.match(spec.type):
                self.log.add(
                    f"message type {spec.type!r} must look like '<entity>.<event>'",
                    (*path, "type"),
                    "e.g. order_status.changed",
                )
            payload = self.record(spec, path, label)
            return Emit(spec.type, payload) if payload else None
        if kind == "fail":
            template = self.template(spec.reason, (*path, "reason"))
            return Fail(spec.code, template) if template else None
        params = self.inline(spec.params, (*path, "params"), label, None) if spec.params else None
        return Plugin(kind, plugins[kind], params)

    # ----- parts ---------------------------------------------------------------------------------
    def record(self, spec: RecordSpec, path: YamlPath, label: str) -> RecordBuilder | None:
        if spec.fields is not None:
            if spec.mappings or spec.from_ is not None:
                self.log.add("give either 'fields:' or 'from:'/'mappings:', not both", (*path, "fields"))
                return None
            return self.inline(spec.fields, (*path, "fields"), label, spec.entity)
        if spec.entity is not None:
            self.log.add("'entity:' goes with 'fields:' (mappings name their target themselves)", (*path, "entity"))
        source = spec.from_ or "record"
        self.check_context_path(source, (*path, "from"))
        builder = RecordBuilder(
            label=label, source=make_getter(source) if self._path_ok(source) else None, source_path=source
        )
        if builder.source is None:
            return None
        if spec.mappings:
            problems = self.mappings.chain_problems(spec.mappings)
            for problem in problems:
                self.log.add(problem.message, (*path, "mappings"), problem.hint)
            if problems:
                return None
            ids = spec.mappings
            builder.chain = self.mappings[ids[0]] if len(ids) == 1 else self.mappings.chain(ids)
            builder.label = "+".join(ids)
        return builder

    def inline(self, fields: dict[str, Any], path: YamlPath, label: str, entity: str | None) -> RecordBuilder | None:
        builder = RecordBuilder(label=label)
        if entity is not None:
            builder.model = entity_model(entity)
            if builder.model is None:
                from middleware.entities import ENTITIES

                self.log.add(f"no canonical entity {entity!r}", (*path[:-1], "entity"), did_you_mean(entity, ENTITIES))
                return None
        plain: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, dict) and set(value) == {"template"}:
                template = self.template(value["template"], (*path, name, "template"))
                if template is not None:
                    builder.templates[name] = template
            else:
                plain[name] = value
        if not plain:
            return builder
        sub = _sub_document(self.doc, path, plain, label, entity or "flow.context")
        compiled, problems = compile_document(sub)
        base = render_path(path)
        for problem in problems:
            rest = problem.path.removeprefix("fields")
            self.log.problems.append(dataclasses.replace(problem, path=base + rest if problem.path else base))
        builder.inline = compiled
        self._check_field_paths(plain, path)
        return builder

    def _check_field_paths(self, fields: dict[str, Any], path: YamlPath) -> None:
        """The `from:` paths of inline fields must start at a context root."""
        for name, value in fields.items():
            where = (*path, name)
            if isinstance(value, str):
                self.check_context_path(value, where)
            elif isinstance(value, dict):
                source = value.get("from")
                for j, item in enumerate(source if isinstance(source, list) else [source]):
                    if isinstance(item, str):
                        self.check_context_path(
                            item, (*where, "from", j) if isinstance(source, list) else (*where, "from")
                        )

    def template(self, text: Any, path: YamlPath) -> Template | None:
        if not isinstance(text, str):
            self.log.add(
                "a template is text with {path} placeholders", path, "e.g. 'not enough stock: {steps.stock.summary}'"
            )
            return None
        try:
            template = Template(text)
        except ValueError as exc:
            self.log.add(str(exc), path)
            return None
        for placeholder in template.paths:
            self.check_context_path(placeholder, path)
        return template

    def xref(self, spec: XrefSpec, path: YamlPath) -> XrefRef | None:
        if spec.system not in self.systems:
            self.log.add(f"unknown system {spec.system!r}", (*path, "system"), did_you_mean(spec.system, self.systems))
        self.check_context_path(spec.id, (*path, "id"))
        if not self._path_ok(spec.id):
            return None
        return XrefRef(spec.system, spec.entity, spec.id, make_getter(spec.id))

    def condition(self, spec: Any, path: YamlPath, *, on_input: bool = False) -> Predicate:
        def check(field_path: str, where: YamlPath) -> None:
            if not on_input:
                self.check_context_path(field_path, where)

        return compile_condition(spec, path, self.log, check)

    def check_target(self, system: str, entity: str, path: YamlPath) -> None:
        if system not in self.systems:
            self.log.add(f"unknown system {system!r}", (*path, "system"), did_you_mean(system, self.systems))
            return
        type_name = self.systems[system][0]
        if "write" not in load_adapter_class(type_name).capabilities:
            self.log.add(
                f"system {system!r} ({type_name}) cannot write: its adapter does not declare the 'write' capability",
                (*path, "system"),
                "write and ensure steps need an adapter that can write",
            )
            return
        entities = getattr(self.systems[system][1], "entities", None) or {}
        spec = entities.get(entity) if isinstance(entities, dict) else None
        if spec is None:
            self.log.add(
                f"system {system!r} has no entity {entity!r}",
                (*path, "entity"),
                did_you_mean(entity, entities) or f"add it under systems.{system}.entities",
            )
        elif getattr(spec, "write", "unknown") is None:
            self.log.add(
                f"entity {entity!r} of system {system!r} has no 'write:' settings",
                (*path, "entity"),
                f"add systems.{system}.entities.{entity}.write",
            )

    def write_key(self, system: str, entity: str) -> tuple[str, ...]:
        """The field the target's adapter finds records by (`WriteKeys`): an `ensure` creates under it."""
        config = self.systems[system][1] if system in self.systems else None
        field = config.write_key_field(entity) if isinstance(config, WriteKeys) else None
        return (field,) if field else ()

    def check_operation(self, system: str, operation: str, path: YamlPath) -> None:
        if system not in self.systems:
            self.log.add(f"unknown system {system!r}", (*path, "system"), did_you_mean(system, self.systems))
            return
        type_name = self.systems[system][0]
        operations = operations_of(load_adapter_class(type_name))
        if not operations:
            self.log.add(
                f"system {system!r} ({type_name}) offers no operations to call",
                (*path, "system"),
                "call steps need an adapter that declares the 'call' capability, e.g. tryton",
            )
        elif operation not in operations:
            self.log.add(
                f"{type_name} has no operation {operation!r}",
                (*path, "operation"),
                did_you_mean(operation, operations) or "one of: " + ", ".join(operations),
            )

    def check_context_path(self, text: str, path: YamlPath, *, roots: bool = True) -> None:
        if not self._path_ok(text):
            self.log.add(f"{text!r} is not a dotted path", path, "e.g. record.customer_no or steps.sale.id")
            return
        if not roots:
            return
        parts = split_path(text)
        if not parts or parts[0] not in CONTEXT_ROOTS:
            self.log.add(
                f"{text!r} does not start at the run's context",
                path,
                f"start with one of: {', '.join(CONTEXT_ROOTS)} (the input record is record.…)",
            )
        elif parts[0] == "steps" and len(parts) > 1 and parts[1] not in self.names:
            self.log.add(f"no step named {parts[1]!r}", path, did_you_mean(parts[1], self.names))
        elif parts[0] == "signals" and len(parts) > 1 and parts[1] not in self.spec.signals:
            self.log.add(
                f"no signal named {parts[1]!r}",
                path,
                did_you_mean(parts[1], self.spec.signals) or "declare it under `signals:`",
            )

    @staticmethod
    def _path_ok(text: str) -> bool:
        try:
            split_path(text)
        except ValueError:
            return False
        return bool(text)

    def _where(self, path: YamlPath) -> str:
        return str(self.doc.locate(path))


def _rule_predicate(own: Predicate | None, changes: list[Any]) -> Predicate:
    def applies(context: Any) -> bool:
        if changes:
            previous, record = context.get("previous") or {}, context.get("record") or {}
            if not previous or all(key_text(g(record)) == key_text(g(previous)) for g in changes):
                return False
        return own is None or bool(own(context))

    return applies


def _gated(rule: str, own: Predicate | None) -> Predicate:
    def gated(context: Any) -> bool:
        decided = (context.get("steps") or {}).get(rule) or {}
        return bool(decided.get("applies")) and (own is None or bool(own(context)))

    return gated


def _sub_document(doc: YamlDocument, base: YamlPath, fields: dict[str, Any], label: str, target: str) -> YamlDocument:
    """A mapping document for inline fields, whose locations are those in the flow file."""
    data = {"mapping": label, "source": "flow.context", "target": target, "fields": fields}
    sub = YamlDocument(file=doc.file, data=data)
    here = doc.locate(base)
    for key in ((), ("mapping",), ("source",), ("target",)):
        sub.value_locations[key] = here
    n = len(base)
    for table, sub_table in ((doc.value_locations, sub.value_locations), (doc.key_locations, sub.key_locations)):
        for path, location in table.items():
            if path[:n] == base:
                sub_table[("fields", *path[n:])] = location
    return sub
