"""deploy/docker: the worker image's Dockerfile, checked against the project without building it.

No Docker engine runs here. What the build would do with the project is done for real
instead: the files the Dockerfile copies (and the ignore file lets through) are built into a
wheel, as `pip install .` in the image builds one, and its console script and adapter entry
point must be there; the HEALTHCHECK command runs against a live HealthServer.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import import_module
from pathlib import Path

import pytest

from middleware.cli.main import build_parser
from middleware.config import ObservabilityConfig
from middleware.observability import HealthServer
from tests.deploy.deploy_files import DOCKERIGNORE, REPO, dockerfile_instructions, k8s_resource

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _one(keyword: str, stage: int = -1) -> str:
    """The arguments of the last `keyword` instruction in the given build stage (default: the final one)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    found = [arguments for name, arguments in stages[stage] if name == keyword]
    assert found, f"no {keyword} in build stage {stage}"
    return found[-1]


def _exec_form(keyword: str) -> list[str]:
    value = json.loads(_one(keyword))
    assert isinstance(value, list), f"{keyword} must use the exec form (a JSON array): signals reach the worker"
    return value


def _copied_sources() -> list[str]:
    """Build-context paths that COPY instructions (not `--from=` ones) take."""
    sources = []
    for name, arguments in dockerfile_instructions():
        if name == "COPY" and not arguments.startswith("--from"):
            sources.extend(arguments.split()[:-1])
    return sources


def _sent_to_builder(path: str) -> bool:
    """Whether the Dockerfile.dockerignore lets `path` into the build context (last match wins)."""
    included = True
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def test_entrypoint_is_the_isthmus_worker_console_script() -> None:
    entrypoint = _exec_form("ENTRYPOINT")
    assert entrypoint == ["isthmus", "worker"]
    target = PYPROJECT["project"]["scripts"][entrypoint[0]]
    module, _, function = target.partition(":")
    assert callable(getattr(import_module(module), function))


def test_default_command_is_accepted_by_the_cli() -> None:
    args = build_parser().parse_args([*_exec_form("ENTRYPOINT")[1:], *_exec_form("CMD")])
    assert args.command == "worker" and args.config == "/etc/isthmus/isthmus.yaml"


def test_runtime_is_slim_python_of_a_supported_version() -> None:
    image_arg = next(a for n, a in dockerfile_instructions() if n == "ARG" and a.startswith("PYTHON_IMAGE="))
    image = image_arg.partition("=")[2]
    assert image.startswith("python:3.11") and "-slim" in image
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert _one("FROM").split()[0] == "${PYTHON_IMAGE}"


def test_runs_as_the_non_root_user_the_pods_expect() -> None:
    user, _, group = _one("USER").partition(":")
    assert user.isdigit() and int(user) != 0, "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    pod = k8s_resource("Deployment", "isthmus-worker")["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user), int(group))


def test_stops_with_sigterm_so_the_worker_drains() -> None:
    assert _one("STOPSIGNAL") == "SIGTERM"


def test_exposes_the_metrics_port_of_the_default_config() -> None:
    assert _one("EXPOSE") == str(ObservabilityConfig().port)
    env = _one("ENV")
    assert f"ISTHMUS_HEALTH_PORT={ObservabilityConfig().port}" in env.split()


def test_healthcheck_passes_against_a_live_health_server_and_fails_when_a_thread_died() -> None:
    options, _, command_text = _one("HEALTHCHECK").partition("CMD ")
    assert "--interval" in options
    command = json.loads(command_text)
    assert command[0] == "python", "slim images have no curl: the check runs on the image's python"
    assert "/healthz" in command[-1]

    alive = {"ok": True}
    server = HealthServer("127.0.0.1", 0, alive=lambda: alive["ok"], ready=lambda: (True, "ready")).start()
    env = {"ISTHMUS_HEALTH_PORT": str(server.port), "PATH": "/usr/bin:/bin"}
    try:
        assert subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode == 0
        alive["ok"] = False
        failed = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
        assert failed.returncode != 0
    finally:
        server.stop()


def test_every_copied_path_exists_and_reaches_the_builder() -> None:
    for source in _copied_sources():
        assert (REPO / source).exists(), source
        assert _sent_to_builder(source), f"{source} is excluded by Dockerfile.dockerignore"
    assert not _sent_to_builder(".venv/bin/python") and not _sent_to_builder(".isthmus/state.db")
    assert not _sent_to_builder("middleware/__pycache__/cli.cpython-311.pyc")


def test_copied_files_build_a_wheel_with_the_console_script_and_adapters(tmp_path: Path) -> None:
    """`pip install .` on exactly what the Dockerfile copies: the same build, without an image."""
    context = tmp_path / "src"
    for source in _copied_sources():
        origin, destination = REPO / source, context / source
        destination.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(origin, destination)
    # With build isolation, as in the image: pip fetches the build backend pyproject.toml names.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(context)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if result.returncode != 0 and "install build dependencies" in result.stderr:
        pytest.skip(f"pip could not fetch the build backend (no package index?): {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("isthmus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"middleware/cli/main.py", "middleware/runtime/worker.py", "adapters/rest/__init__.py"} <= names
    assert {"deploy/demo/sample_crm.py", "deploy/demo/sample_erp.py"} <= names, "compose runs the samples"
    assert "isthmus = middleware.cli.main:main" in entry_points
    assert "rest = adapters.rest:RestAdapter" in entry_points
