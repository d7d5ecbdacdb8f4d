"""deploy/k8s: the manifests are valid Kubernetes, and what a pod would see is a config that loads.

No cluster runs here. The manifests are checked against the Kubernetes API schemas
(kubernetes-validate bundles them), built with `kubectl kustomize` where kubectl exists, and
the worker pod's view — ConfigMaps at their mount paths, the Secret's keys as environment —
is rebuilt and loaded with the project's own config loader. Probe paths are fetched from a
live HealthServer.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.broker.rabbitmq_topology import shard_queues
from middleware.cli.main import build_parser
from middleware.config import load_config
from middleware.observability import HealthServer
from middleware.runtime.worker import Worker
from tests.deploy.deploy_files import (
    K8S_DIR,
    MAPPINGS_DIR,
    env_references,
    k8s_documents,
    k8s_resource,
    materialize_pod_files,
)

NAMESPACE = "isthmus"
DEPLOYMENTS = ("isthmus-worker", "isthmus-sources")
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "keda-scaledobject.yaml"}
# The oldest Kubernetes minor still commonly run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", "latest")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _config_text() -> str:
    return k8s_resource("ConfigMap", "isthmus-config")["data"]["isthmus.yaml"]


def _config_port() -> int:
    return int(yaml.safe_load(_config_text())["observability"]["port"])


def _secret_keys() -> set[str]:
    return set(k8s_resource("Secret", "isthmus-secrets")["stringData"])


def _metrics_port(container: dict[str, Any]) -> int:
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    return int(port["containerPort"])


def test_every_manifest_parses_and_sits_in_the_namespace() -> None:
    documents = k8s_documents()
    assert "kustomization.yaml" in documents and "README.md" not in documents
    for name, docs in documents.items():
        assert docs, f"{name} holds no document"
        for doc in docs:
            if doc["kind"] in ("Namespace", "Kustomization"):
                continue
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{name}: {doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_follow_the_kubernetes_api_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate bundles the API schemas (add it to the test extra)"
    )
    version = kubernetes_validate.latest_version() if version == "latest" else version
    checked = 0
    for docs in k8s_documents().values():
        for doc in docs:
            if doc["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/")):
                continue  # custom resources: no schema in the bundle (keda is checked below)
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 8


def test_kustomization_lists_every_manifest_but_the_secret_example_and_keda() -> None:
    kustomization = k8s_documents()["kustomization.yaml"][0]
    assert kustomization["namespace"] == NAMESPACE
    listed = set(kustomization["resources"])
    expected = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"} - NOT_IN_KUSTOMIZATION
    assert listed == expected
    assert {i["name"] for i in kustomization["images"]} == {
        _container(k8s_resource("Deployment", d))["image"].split(":")[0] for d in DEPLOYMENTS
    }


def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
    ]


@pytest.mark.parametrize("deployment_name", DEPLOYMENTS)
def test_pod_config_loads_with_the_project_config_loader(
    deployment_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMaps at the pod's mount paths, the Secret's keys as environment: the config validates."""
    deployment = k8s_resource("Deployment", deployment_name)
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    materialize_pod_files(pod, container, tmp_path)
    assert [ref["secretRef"]["name"] for ref in container["envFrom"]] == ["isthmus-secrets"]
    environment = dict(k8s_resource("Secret", "isthmus-secrets")["stringData"])
    environment.update({e["name"]: e["value"] for e in container.get("env", [])})
    required, _ = env_references(_config_text())
    for name in required:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    args = build_parser().parse_args(["worker", *container["args"]])
    config = load_config(tmp_path / args.config.lstrip("/"))

    assert config.model.broker.startswith("amqp://") and config.model.store.startswith("postgresql://")
    assert config.model.observability.host == "0.0.0.0", "probes and Prometheus reach the pod IP"
    assert config.model.observability.port == _metrics_port(container)


def test_every_variable_the_config_references_is_in_the_secret() -> None:
    required, _ = env_references(_config_text())
    assert required - _secret_keys() == set()


def test_secret_example_holds_only_placeholders() -> None:
    for key, value in k8s_resource("Secret", "isthmus-secrets")["stringData"].items():
        assert "CHANGE_ME" in value, f"{key} must be a placeholder in the example"


def test_mappings_configmap_is_the_mappings_folder() -> None:
    data = k8s_resource("ConfigMap", "isthmus-mappings")["data"]
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(MAPPINGS_DIR.glob("*.yaml"))}
    assert sorted(data) == sorted(files), "regenerate deploy/k8s/configmap-mappings.yaml (command in its header)"
    for name, text in files.items():
        assert data[name] == text, f"{name} differs from mappings/{name}: regenerate the ConfigMap"


@pytest.mark.parametrize("deployment_name", DEPLOYMENTS)
def test_probes_use_the_paths_the_health_server_serves_on_the_config_port(deployment_name: str) -> None:
    container = _container(k8s_resource("Deployment", deployment_name))
    assert _metrics_port(container) == _config_port()
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert {p["port"] for p in probes.values()} == {"metrics"}

    alive, ready = {"ok": True}, {"ok": True}
    server = HealthServer(
        "127.0.0.1", 0, alive=lambda: alive["ok"], ready=lambda: (ready["ok"], "" if ready["ok"] else "broker down")
    ).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        for probe in probes.values():
            with urllib.request.urlopen(base + probe["path"], timeout=5) as response:
                assert response.status == 200
        ready["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(base + probes["readinessProbe"]["path"], timeout=5)
        assert not_ready.value.code == 503
        with urllib.request.urlopen(base + probes["livenessProbe"]["path"], timeout=5) as response:
            assert response.status == 200, "a broker outage must not restart the pod"
        alive["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as dead:
            urllib.request.urlopen(base + probes["livenessProbe"]["path"], timeout=5)
        assert dead.value.code == 503
    finally:
        server.stop()


@pytest.mark.parametrize("deployment_name", DEPLOYMENTS)
def test_termination_grace_covers_the_drain(deployment_name: str) -> None:
    drain_s = inspect.signature(Worker.stop).parameters["timeout_s"].default
    pod = k8s_resource("Deployment", deployment_name)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= drain_s + 15


@pytest.mark.parametrize("deployment_name", DEPLOYMENTS)
def test_pods_run_non_root_on_a_read_only_root_filesystem(deployment_name: str) -> None:
    deployment = k8s_resource("Deployment", deployment_name)
    pod, container = deployment["spec"]["template"]["spec"], _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert "emptyDir" in volumes[writable[0]["name"]]
    assert {"requests", "limits"} <= set(container["resources"])


@pytest.mark.parametrize("deployment_name", DEPLOYMENTS)
def test_pods_carry_prometheus_scrape_annotations_for_the_metrics_port(deployment_name: str) -> None:
    template = k8s_resource("Deployment", deployment_name)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(_config_port())
    assert annotations["prometheus.io/path"] == "/metrics"


def test_route_workers_scale_and_sources_run_once() -> None:
    worker = k8s_resource("Deployment", "isthmus-worker")
    sources = k8s_resource("Deployment", "isthmus-sources")
    assert worker["spec"]["replicas"] >= 2
    assert sources["spec"]["replicas"] == 1 and sources["spec"]["strategy"]["type"] == "Recreate"
    worker_args = build_parser().parse_args(["worker", *_container(worker)["args"]])
    sources_args = build_parser().parse_args(["worker", *_container(sources)["args"]])
    assert worker_args.no_sources and not worker_args.no_routes
    assert sources_args.no_routes and not sources_args.no_sources


def test_selectors_match_the_pods_they_mean() -> None:
    labels = {d: k8s_resource("Deployment", d)["spec"]["template"]["metadata"]["labels"] for d in DEPLOYMENTS}
    for name in DEPLOYMENTS:
        selector = k8s_resource("Deployment", name)["spec"]["selector"]["matchLabels"]
        assert [d for d in DEPLOYMENTS if selector.items() <= labels[d].items()] == [name]
    pdb = k8s_resource("PodDisruptionBudget", "isthmus-worker")["spec"]["selector"]["matchLabels"]
    assert [d for d in DEPLOYMENTS if pdb.items() <= labels[d].items()] == ["isthmus-worker"]
    service = k8s_resource("Service", "isthmus-metrics")["spec"]
    assert all(service["selector"].items() <= labels[d].items() for d in DEPLOYMENTS)
    (port,) = service["ports"]
    assert port["targetPort"] == "metrics" and port["port"] == _config_port()
    assert service["clusterIP"] == "None", "headless: one record per pod, so every pod is scraped"
    assert service["publishNotReadyAddresses"] is True, "a pod whose broker is down must still be scraped"


def test_keda_scales_the_worker_deployment_on_every_route_queue() -> None:
    scaled = k8s_resource("ScaledObject", "isthmus-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "isthmus-worker"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    routes = yaml.safe_load(_config_text())["routes"]
    queues = {name for route in routes for name in shard_queues(route["name"], route.get("shards", 1))}
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"rabbitmq"}
    assert {t["metadata"]["queueName"] for t in triggers} == queues, "one trigger per (shard) queue of each route"
    for trigger in triggers:
        assert trigger["metadata"]["mode"] == "QueueLength" and int(trigger["metadata"]["value"]) > 0
        auth = k8s_resource("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
        for ref in auth["secretTargetRef"]:
            assert ref["name"] == "isthmus-secrets" and ref["key"] in _secret_keys()
