"""Reading the deployment files the way Docker and Kubernetes would, without either.

Compose's `${VAR}` interpolation, the Dockerfile's instructions, and the files a container
or pod sees at its mount points are rebuilt here, so the tests can load the very
isthmus.yaml a worker would load, with the environment it would get.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from middleware.config.envrefs import ENV_REF

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
K8S_DIR = DEPLOY / "k8s"
MAPPINGS_DIR = REPO / "mappings"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal `$`.
_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset: compose refuses to start."""


def string_values(data: Any) -> Iterator[str]:
    """Every string value in parsed YAML (keys and comments excluded: neither is interpolated)."""
    if isinstance(data, dict):
        for value in data.values():
            yield from string_values(value)
    elif isinstance(data, list):
        for value in data:
            yield from string_values(value)
    elif isinstance(data, str):
        yield data


def compose_variables(data: Any) -> set[str]:
    """Names of the variables compose substitutes in parsed compose data (escaped `$$` excluded)."""
    return {m.group(1) for text in string_values(data) for m in _COMPOSE_VAR.finditer(text) if m.group(1)}


def interpolate_compose(data: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution in every string value, as `docker compose config` does it."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                raise MissingVariable(f"{name}: {argument}")
            return value
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return value if value is not None else argument
        return value or ""

    if isinstance(data, dict):
        return {key: interpolate_compose(value, env) for key, value in data.items()}
    if isinstance(data, list):
        return [interpolate_compose(value, env) for value in data]
    if isinstance(data, str):
        return _COMPOSE_VAR.sub(replace, data)
    return data


def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved, nothing interpolated)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file; comments and blank lines skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml interpolated with `env` (default: the values of .env.example)."""
    data = interpolate_compose(raw_compose(), read_env_file(ENV_EXAMPLE) if env is None else env)
    assert isinstance(data, dict)
    return data


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment:` as a dict, whether written as a mapping or as a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) of a service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        assert isinstance(volume, str), f"long-syntax volume not expected here: {volume!r}"
        parts = volume.split(":")
        source, target = parts[0], parts[1]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_DIR / source).resolve(), target, parts[2:] == ["ro"]))
    return mounts


def materialize_compose_mounts(service: Mapping[str, Any], root: Path) -> None:
    """Copy what the service's bind mounts show into `root`, at their container paths."""
    for source, target, _ in bind_mounts(service):
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copyfile(source, destination)


def env_references(config_text: str) -> tuple[set[str], set[str]]:
    """(variables an isthmus.yaml needs, variables it names with a default) — as envrefs reads them."""
    required: set[str] = set()
    defaulted: set[str] = set()
    for text in string_values(yaml.safe_load(config_text)):
        for match in ENV_REF.finditer(text):
            (defaulted if match.group(2) is not None else required).add(match.group(1))
    return required, defaulted


def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document under deploy/k8s, by file name."""
    documents = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents[path.name] = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    return documents


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    for docs in k8s_documents().values():
        for doc in docs:
            if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
                return doc
    raise AssertionError(f"no {kind} {name!r} under deploy/k8s")


def materialize_pod_files(pod_spec: Mapping[str, Any], container: Mapping[str, Any], root: Path) -> None:
    """Write what the container's ConfigMap mounts show into `root`, at their mount paths."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        data = k8s_resource("ConfigMap", volume["configMap"]["name"])["data"]
        destination = root / mount["mountPath"].lstrip("/")
        if "subPath" in mount:
            files = {destination: data[mount["subPath"]]}
        else:
            files = {destination / key: value for key, value in data.items()}
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def parse_duration_s(value: str | int | float) -> float:
    """A compose duration ("1m30s", "60s", "500ms") in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total
