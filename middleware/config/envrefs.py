"""`${ENV_VAR}` references in YAML: resolved at start, never logged, never echoed back.

Secrets live in the environment, not in files. A config value may be a whole reference
(`${CRM_TOKEN}`), a reference with a default (`${CRM_URL:-http://127.0.0.1:8801}`), or a
string containing references. Secrets must be references, so a token pasted into a YAML file
fails at start instead of landing in git. A secret is:

- the value of a secret key (`token`, `password`, `secret`, `client_secret`, `auth.value`...);
- an entry of a free-form map (`headers`, `login.extra_fields`, OAuth2 `params`, query
  `params`) whose name says it is one (`Authorization`, `X-Api-Key`, `otp_secret`...): its
  value must contain a reference (`Bearer ${CRM_TOKEN}` is fine);
- the password of any URL (`amqp://user:PASS@host`, `postgresql://u:PASS@h/db`,
  `?password=`): it must be a whole reference, or the whole URL one. RabbitMQ's `guest:guest`
  on a loopback host is not a secret (RabbitMQ accepts it only from the same machine).

Values resolved from the environment are remembered on the document (`env_values`), so
that no error ever echoes them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from middleware.errors import Problem
from middleware.yamlsource import YamlDocument, YamlPath

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_KEYS = frozenset({"token", "password", "secret", "client_secret", "api_key", "value"})
SECRET_PARENTS = frozenset({"auth"})
ALWAYS_SECRET = frozenset({"token", "password", "secret", "client_secret"})
# Maps whose keys are names chosen by the integrator (HTTP headers, form and query fields).
NAMED_MAPS = frozenset({"headers", "extra_fields", "params", "check_params"})
_SECRET_WORDS = frozenset(
    {
        *("auth", "authorization", "token", "secret", "password", "passwd", "pwd", "credential", "credentials"),
        *("signature", "cookie", "session", "sessionid", "bearer", "jwt", "otp", "apikey", "assertion"),
    }
)
_SECRET_ENDINGS = ("token", "secret", "password", "passwd", "apikey", "accesskey", "privatekey", "secretkey")
# `key` alone is a credential only as the whole name or after one of these (X-Api-Key, not sort_key)
_KEY_KINDS = frozenset(
    {"x", "api", "access", "secret", "private", "subscription", "app", "client", "license", "auth", "master", "signing"}
)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")
_REF_MARK = "\x00ref\x00"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


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


def is_secret_name(name: str) -> bool:
    """Whether a header or field name says its value is a credential (`Authorization`,
    `X-Api-Key`, `access_token`, `otp_secret`), word by word so `author` or `keyword` are not."""
    words = [
        w
        for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])|([A-Z])([A-Z][a-z])", r"\1\3_\2\4", name).lower())
        if w
    ]
    if words == ["key"] or any(
        w == "key" and before in _KEY_KINDS for before, w in zip(words, words[1:], strict=False)
    ):
        return True
    return any(
        w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) or (w.startswith("auth") and not w.startswith("author"))
        for w in words
    )


def _in_named_map(path: YamlPath) -> bool:
    return len(path) >= 2 and isinstance(path[-1], str) and path[-2] in NAMED_MAPS and is_secret_name(path[-1])


def clear_url_password(text: str) -> str | None:
    """The first URL in `text` whose password is written out (not a whole `${VAR}`), or None."""
    for found in _URL.finditer(ENV_REF.sub(_REF_MARK, text)):
        try:
            parts = urlsplit(found.group())
            password = parts.password
            query = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            continue
        if (
            password
            and password != _REF_MARK
            and not (parts.username == "guest" and password == "guest" and (parts.hostname or "") in _LOOPBACK)
        ):
            return found.group()
        if any(name == "password" and value not in ("", _REF_MARK) for name, value in query):
            return found.group()
    return None


def _walk(value: Any, path: YamlPath, doc: YamlDocument, env: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), doc, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), doc, env, problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        dotted = ".".join(str(p) for p in path)
        var = _suggest_var(path)
        if _is_secret_key(path) and not ENV_REF.fullmatch(value.strip()):
            problems.append(
                Problem(
                    "secrets must not be written in YAML",
                    doc.locate(path),
                    dotted,
                    f"write '${{{var}}}' and export {var} in the environment",
                )
            )
            return value
        if _in_named_map(path) and not ENV_REF.search(value):
            problems.append(
                Problem(
                    f"{path[-1]!r} carries a credential: secrets must not be written in YAML",
                    doc.locate(path),
                    dotted,
                    f"write '${{{var}}}' (or e.g. 'Bearer ${{{var}}}') and export {var} in the environment",
                )
            )
            return value
        if clear_url_password(value) is not None:
            problems.append(
                Problem(
                    "this URL has its password written in clear: secrets must not be written in YAML",
                    doc.locate(path),
                    dotted,
                    f"write the password as ${{{var}_PASSWORD}} (scheme://user:${{{var}_PASSWORD}}@host...), or the "
                    f"whole URL as ${{{var}_URL}}, and export it in the environment",
                )
            )
            return value
        return _substitute(value, path, doc, env, problems)
    return value


def _substitute(text: str, path: YamlPath, doc: YamlDocument, env: Mapping[str, str], problems: list[Problem]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            doc.env_values.add(env[name])
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
