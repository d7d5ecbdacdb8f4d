"""deploy/compose: the compose file is valid, wired to the worker's real config, and keeps secrets out.

No Docker engine runs here, so the stack is not started; instead each check reads what
compose would hand a container (interpolated with .env.example) and holds it against the
code: the config loader, the CLI parser, the health server and the drain timeout.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.cli.main import build_parser
from middleware.config import ObservabilityConfig, load_config
from middleware.observability import HealthServer
from middleware.runtime.worker import Worker
from tests.deploy.deploy_files import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    DEPLOY,
    ENV_EXAMPLE,
    MissingVariable,
    bind_mounts,
    compose_variables,
    env_references,
    interpolate_compose,
    load_compose,
    materialize_compose_mounts,
    parse_duration_s,
    raw_compose,
    read_env_file,
    service_environment,
)

ISTHMUS_SERVICES = ("worker", "sources")
CONFIG_IN_CONTAINER = "/etc/isthmus/isthmus.yaml"
COMPOSE_CONFIG = COMPOSE_DIR / "isthmus.yaml"
# Files another part of deploy/ provides; compose mounts them where the images expect them.
MONITORING_MOUNTS = {
    "prometheus": {
        DEPLOY / "prometheus" / "prometheus.yml": "/etc/prometheus/prometheus.yml",
        DEPLOY / "prometheus" / "alerts.yml": "/etc/prometheus/alerts.yml",
    },
    "grafana": {
        DEPLOY / "grafana" / "provisioning": "/etc/grafana/provisioning",
        DEPLOY / "grafana" / "dashboards": "/var/lib/grafana/dashboards",
    },
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _config_port() -> int:
    return int(yaml.safe_load(COMPOSE_CONFIG.read_text(encoding="utf-8"))["observability"]["port"])


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    pytest.importorskip(
        "check_jsonschema", reason="the compose-spec schema ships with check-jsonschema (add it to the test extra)"
    )
    from importlib.resources import files

    import jsonschema

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (`docker compose version` fails)")
    # `config` only parses, interpolates and validates: it needs no engine.
    result = subprocess.run(
        [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_compose_variable_has_a_placeholder_in_env_example() -> None:
    used = compose_variables(raw_compose())
    offered = set(read_env_file(ENV_EXAMPLE))
    assert used - offered == set(), "add these to deploy/compose/.env.example"
    assert offered - used == set(), "these .env.example entries are used nowhere"


def test_compose_refuses_to_start_without_a_secret() -> None:
    env = read_env_file(ENV_EXAMPLE)
    raw = raw_compose()
    for name in ("RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", "CRM_TOKEN", "ERP_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        without = {k: v for k, v in env.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate_compose(raw, without)


def test_no_secret_is_written_inline() -> None:
    """Every value of a secret-looking variable comes from .env, and .env itself stays out of git."""
    raw = raw_compose()
    secret_name = re.compile(r"PASS|PASSWORD|TOKEN|SECRET|_URL$")
    for name, service in raw["services"].items():
        for key, value in service_environment(service).items():
            if secret_name.search(key) and key != "ISTHMUS_HEALTH_PORT":
                assert "${" in value, f"services.{name}.environment.{key} must come from .env, not be written here"
    for key, value in read_env_file(ENV_EXAMPLE).items():
        if secret_name.search(key):
            assert "change-me" in value, f".env.example {key} must be an obvious placeholder"
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()


@pytest.mark.parametrize("service_name", ISTHMUS_SERVICES)
def test_container_config_loads_with_the_project_config_loader(
    compose: dict[str, Any], service_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The isthmus.yaml and mappings the container sees validate, with exactly the container's environment."""
    service = _services(compose)[service_name]
    materialize_compose_mounts(service, tmp_path)
    env = service_environment(service)
    required, _ = env_references(COMPOSE_CONFIG.read_text(encoding="utf-8"))
    for name in required:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    config = load_config(tmp_path / CONFIG_IN_CONTAINER.lstrip("/"))

    model = config.model
    assert model.broker.startswith("amqp://") and "@rabbitmq:5672/" in model.broker
    assert model.store.startswith("postgresql://") and "@postgres:5432/" in model.store
    assert model.observability.host == "0.0.0.0", "other containers must reach /metrics and /healthz"
    assert len(model.routes) >= 1 and len(model.sources) >= 1


def test_every_variable_the_config_references_is_provided(compose: dict[str, Any]) -> None:
    required, _ = env_references(COMPOSE_CONFIG.read_text(encoding="utf-8"))
    for name in ISTHMUS_SERVICES:
        provided = set(service_environment(_services(compose)[name]))
        assert required - provided == set(), f"services.{name}.environment lacks these"


@pytest.mark.parametrize("service_name", ISTHMUS_SERVICES)
def test_command_is_one_the_cli_accepts(compose: dict[str, Any], service_name: str) -> None:
    command = _services(compose)[service_name]["command"]
    args = build_parser().parse_args(["worker", *command])
    assert args.config == CONFIG_IN_CONTAINER
    assert (args.no_sources, args.no_routes) == ((True, False) if service_name == "worker" else (False, True))


def test_config_and_mappings_are_mounted_read_only(compose: dict[str, Any]) -> None:
    for name in ISTHMUS_SERVICES:
        service = _services(compose)[name]
        mounts = {target: (source, ro) for source, target, ro in bind_mounts(service)}
        assert mounts[CONFIG_IN_CONTAINER] == (COMPOSE_CONFIG, True)
        assert mounts["/etc/isthmus/mappings"] == ((COMPOSE_DIR / "../../mappings").resolve(), True)
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]


def test_route_workers_scale_out_and_sources_run_once(compose: dict[str, Any]) -> None:
    assert _services(compose)["worker"]["deploy"]["replicas"] >= 2
    assert _services(compose)["sources"]["deploy"]["replicas"] == 1
    assert "ports" not in _services(compose)["worker"], "replicas cannot share a host port"


@pytest.mark.parametrize("service_name", ISTHMUS_SERVICES)
def test_workers_get_longer_than_the_drain_to_stop(compose: dict[str, Any], service_name: str) -> None:
    drain_s = inspect.signature(Worker.stop).parameters["timeout_s"].default
    service = _services(compose)[service_name]
    assert service["stop_signal"] == "SIGTERM"
    assert parse_duration_s(service["stop_grace_period"]) >= drain_s + 15


@pytest.mark.parametrize("service_name", ISTHMUS_SERVICES)
def test_workers_wait_for_a_healthy_broker_and_store(compose: dict[str, Any], service_name: str) -> None:
    depends = _services(compose)[service_name]["depends_on"]
    for dependency in ("rabbitmq", "postgres"):
        assert depends[dependency] == {"condition": "service_healthy"}
        assert "healthcheck" in _services(compose)[dependency]
    for dependency, condition in depends.items():
        assert dependency in _services(compose)
        if condition["condition"] == "service_healthy":
            assert "healthcheck" in _services(compose)[dependency], f"{dependency} can never become healthy"


@pytest.mark.parametrize("service_name", ISTHMUS_SERVICES)
def test_healthcheck_passes_against_a_live_health_server_and_fails_when_a_thread_died(
    compose: dict[str, Any], service_name: str
) -> None:
    """The compose healthcheck command, run for real against HealthServer (on a free port instead of 9464)."""
    port = _config_port()
    assert port == ObservabilityConfig().port
    test = _services(compose)[service_name]["healthcheck"]["test"]
    assert test[0] == "CMD" and f"http://127.0.0.1:{port}/healthz" in " ".join(test)
    assert str(port) in _services(compose)[service_name]["expose"]

    alive = {"ok": True}
    server = HealthServer("127.0.0.1", 0, alive=lambda: alive["ok"], ready=lambda: (True, "ready")).start()
    try:
        assert test[1] == "python", "slim images have no curl: the check must run on the image's python"
        command = [sys.executable, *(part.replace(f":{port}/", f":{server.port}/") for part in test[2:])]
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        alive["ok"] = False
        assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0
    finally:
        server.stop()


def test_health_server_serves_the_paths_the_healthchecks_use() -> None:
    server = HealthServer("127.0.0.1", 0, alive=lambda: True, ready=lambda: (True, "ready")).start()
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                assert response.status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nothing", timeout=5)
    finally:
        server.stop()


def test_rabbitmq_has_plugins_healthcheck_and_a_durable_volume(compose: dict[str, Any]) -> None:
    rabbitmq = _services(compose)["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:3.13-management")
    mounts = {target: source for source, target, _ in bind_mounts(rabbitmq)}
    plugins_text = mounts["/etc/rabbitmq/enabled_plugins"].read_text(encoding="utf-8")
    match = re.fullmatch(r"\s*\[([a-z_,\s]*)\]\.\s*", plugins_text)
    assert match, "enabled_plugins must be one Erlang list term ending in '.'"
    plugins = {p.strip() for p in match.group(1).split(",")}
    assert {"rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange"} <= plugins
    assert mounts["/etc/rabbitmq/conf.d/20-isthmus.conf"].is_file()
    named = [v for v in rabbitmq["volumes"] if v.endswith(":/var/lib/rabbitmq")]
    assert named and named[0].split(":")[0] in compose["volumes"], "the broker's data must outlive the container"
    assert rabbitmq["hostname"], "a fixed hostname keeps the node name, and so its data directory"
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]


def test_store_is_postgres_with_a_durable_volume(compose: dict[str, Any]) -> None:
    postgres = _services(compose)["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_isthmus_images_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
            assert (COMPOSE_DIR / service["build"]["context"]).resolve() == COMPOSE_DIR.parents[1], name


def test_every_bind_mount_exists_in_the_repository(compose: dict[str, Any]) -> None:
    """Includes deploy/prometheus and deploy/grafana, which the monitoring work provides."""
    missing = [
        f"services.{name}: {source.relative_to(COMPOSE_DIR.parents[1])}"
        for name, service in _services(compose).items()
        for source, _, _ in bind_mounts(service)
        if not source.exists()
    ]
    assert missing == []


@pytest.mark.parametrize("service_name", sorted(MONITORING_MOUNTS))
def test_monitoring_files_are_mounted_where_the_images_read_them(compose: dict[str, Any], service_name: str) -> None:
    mounts = {source: (target, ro) for source, target, ro in bind_mounts(_services(compose)[service_name])}
    for source, target in MONITORING_MOUNTS[service_name].items():
        assert mounts.get(source.resolve()) == (target, True)


def test_prometheus_scrapes_the_workers_and_the_sources_poller() -> None:
    """The Prometheus config (deploy/prometheus) names the compose services on the metrics port."""
    path = DEPLOY / "prometheus" / "prometheus.yml"
    assert path.is_file(), "deploy/prometheus/prometheus.yml (from the monitoring work) is missing"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    port = _config_port()
    scraped: set[tuple[str, int]] = set()
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, target_port = target.rpartition(":")
                scraped.add((host, int(target_port)))
        for dns in job.get("dns_sd_configs", []):
            for name in dns.get("names", []):
                scraped.add((name, int(dns.get("port", 0))))
    assert {("worker", port), ("sources", port)} <= scraped
