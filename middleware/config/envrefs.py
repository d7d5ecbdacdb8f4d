"""`${ENV_VAR}` references in YAML: resolved at start, never logged, never echoed back.

Secrets live in the environment, not in files. A config value may be a whole reference
(`${CRM_TOKEN}`), a reference with a default (`${CRM_URL:-http://127.0.0.1:8801}`), or a
string containing references. Keys that hold secrets must be references, so a token pasted
into a YAML file fails at start instead of landing in git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from middleware.errors import Problem
from middleware.yamlsource import YamlDocument, YamlPath

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = frozenset({"token", "password", "secret", "client_secret", "api_key", "value"})
SECRET_PARENTS = frozenset({"auth"})
ALWAYS_SECRET = frozenset({"token", "password", "secret", "client_secret"})


def resolve_env_refs(doc: YamlDocument, env: Mapping[str, str] | None = None) -> tuple[Any, list[Problem]]:
    """Return the document's data with every reference replaced, and the problems found."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []
    data = _walk(doc.data, (), doc, environ, problems)
    return data, problems


def _is_secret_key(path: YamlPath) -> bool:
    if not path or not isinstance(path[-1], str):
        return False
    key = path[-1]
    if key in ALWAYS_SECRET:
        return True
    return key in SECRET_KEYS and len(path) >= 2 and path[-2] in SECRET_PARENTS


def _walk(value: Any, path: YamlPath, doc: YamlDocument, env: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), doc, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), doc, env, problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        if _is_secret_key(path) and not ENV_REF.fullmatch(value.strip()):
            problems.append(
                Problem(
                    "secrets must not be written in YAML",
                    doc.locate(path),
                    ".".join(str(p) for p in path),
                    f"write '${{{_suggest_var(path)}}}' and export {_suggest_var(path)} in the environment",
                )
            )
            return value
        return _substitute(value, path, doc, env, problems)
    return value


def _substitute(text: str, path: YamlPath, doc: YamlDocument, env: Mapping[str, str], problems: list[Problem]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            Problem(
                f"environment variable {name} is not set",
                doc.locate(path),
                ".".join(str(p) for p in path),
                f"export {name}=... before starting, or write ${{{name}:-default}}",
            )
        )
        return ""

    return ENV_REF.sub(replace, text)


def _suggest_var(path: YamlPath) -> str:
    parts = [str(p) for p in path if isinstance(p, str) and p not in {"systems", "auth", "endpoints"}]
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_") or "SECRET"
