"""Turning pydantic validation errors into located, hinted problems.

Shared by the config loader and the mapping loader so that every YAML error reads the same:
`file:line:col: path: what is wrong` and a hint with the nearest valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

from middleware.errors import Problem
from middleware.redact import mask_url_credentials
from middleware.yamlsource import YamlDocument, YamlPath


def nearest_names(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Closest valid names to a misspelt one (difflib ratio, best first)."""
    return difflib.get_close_matches(name, sorted(set(candidates)), n=limit, cutoff=0.5)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    options = sorted(set(candidates))
    close = nearest_names(name, options)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"valid names: {shown}" if options else ""


def render_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems_from_validation(
    exc: ValidationError, doc: YamlDocument, base: YamlPath = (), model: type[BaseModel] | None = None
) -> list[Problem]:
    """One Problem per pydantic error, located in the YAML and hinted where we can."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = (*base, *loc)
        kind = err["type"]
        hint = ""
        if kind == "extra_forbidden":
            name = str(loc[-1]) if loc else ""
            valid = _valid_fields_at(model, loc[:-1]) if model else []
            hint = did_you_mean(name, valid) if valid else "remove this key"
            problems.append(Problem(f"unknown key {name!r}", doc.locate(path, key=True), render_path(path), hint))
            continue
        if kind == "missing":
            hint = f"add '{loc[-1]}:' here" if loc else ""
            problems.append(Problem("required key is missing", doc.locate(path[:-1]), render_path(path), hint))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], dict | list):
            message += f" (got {_echo(err['input'], doc)})"
        problems.append(Problem(message, doc.locate(path), render_path(path), hint))
    return problems


def _echo(value: object, doc: YamlDocument) -> str:
    """The offending value as shown in an error: never one that came from the environment."""
    if isinstance(value, str) and any(resolved and resolved in value for resolved in doc.env_values):
        return "a value from an ${ENV_VAR}, not shown"
    return mask_url_credentials(repr(value))


def _valid_fields_at(model: type[BaseModel] | None, loc: tuple[object, ...]) -> list[str]:
    """Field names (and aliases) of the model found by walking `loc` through nested models."""
    import typing

    current: object = model
    keyed = False  # the previous field was a dict of models: this part is one of its keys
    for part in loc:
        if isinstance(part, int):
            continue
        if keyed:
            keyed = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            for f in current.model_fields.values():
                if f.alias == part:
                    field = f
                    break
        if field is None:
            return []
        keyed = _is_dict(field.annotation)
        current = _first_model(field.annotation, typing)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _is_dict(annotation: object) -> bool:
    """dict[str, Model], or that or None: its next location part is a key, not a field."""
    import typing

    if typing.get_origin(annotation) is dict:
        return True
    return any(typing.get_origin(arg) is dict for arg in typing.get_args(annotation))


def _first_model(annotation: object, typing: object) -> object:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg, typing)
        if found is not None:
            return found
    return None
