"""A real Prometheus on loopback for tests, and readers of the deploy/ files it checks.

`PrometheusServer` runs the `prometheus` binary (Debian package `prometheus`) with a config
derived from deploy/prometheus/prometheus.yml: same job name, the test's worker targets
instead of DNS discovery, 1 s scrape and evaluation intervals, and a copy of
deploy/prometheus/alerts.yml whose expressions are untouched and whose `for:` is 0 s.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERT_RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "isthmus.json"
GRAFANA_DATASOURCE = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "isthmus.yml"

# What Grafana puts in place of its variables when "All" routes are shown over a short range.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "5s",
    "$__range": "5m",
    "${route:regex}": ".*",
    "${route}": ".*",
    "$route": ".*",
}

_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)(\s*)(?=[\d.])")
_ABSENT = re.compile(r"absent\((.*)\)\s*$", re.DOTALL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries() -> tuple[str | None, str | None]:
    return shutil.which("prometheus"), shutil.which("promtool")


def dashboard() -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows flattened)."""
    for panel in board["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def grafana_expr(expr: str) -> str:
    """A panel expression as Grafana sends it to Prometheus, with its variables filled in."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def as_bool_expr(expr: str) -> str:
    """The alert expression with each threshold comparison made `bool`.

    `x > 300` returns only the series above 300; `x > bool 300` returns every series of `x`
    (with 0 or 1), so a non-empty result proves the expression's metric names and labels
    match what the workers export, whether or not the alert holds now. `and`/`or` keep
    working: they match on labels, not values.
    """
    return _COMPARISON.sub(r"\1 bool\2", expr)


def watched_expr(expr: str) -> str:
    """For `absent(x)` (which returns something only when x is missing): x itself."""
    found = _ABSENT.fullmatch(expr.strip())
    return found.group(1) if found else expr


def labels_in_templates(rule: dict[str, Any]) -> set[str]:
    text = " ".join(str(v) for v in rule.get("annotations", {}).values())
    return set(re.findall(r"\$labels\.(\w+)", text))


class PrometheusServer:
    """`prometheus` on 127.0.0.1, scraping `targets` as job isthmus-worker; stopped by `stop()`."""

    def __init__(self, workdir: Path, targets: list[str], binary: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.binary = binary
        self.targets = targets
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"
        self.job = ""

    def write_config(self) -> Path:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
        rules = copy.deepcopy(yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8")))
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"  # fire at the first evaluation that holds; expressions untouched
        rules_path = self.workdir / "alerts.yml"
        rules_path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        config["rule_files"] = [str(rules_path)]
        (job,) = config["scrape_configs"]
        self.job = job["job_name"]
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": self.targets}]
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def start(self) -> PrometheusServer:
        config = self.write_config()
        storage = self.workdir / "data"
        storage.mkdir()
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready within 60 s")

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        found: list[dict[str, Any]] = body["data"]["alerts"]
        return found

    def firing(self, name: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["labels"].get("alertname") == name
            and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None
