"""deploy/: the Dockerfile, docker-compose.yml and the Kubernetes manifests say what they must.

Docker, Compose and a cluster are not available here, so these read the files: every YAML parses,
the probes point at /ready and /health, nothing runs as root, the Job migrates, every file a
manifest mounts exists, and the gateway configs they ship are valid and start (auth on, so
listening on every interface is allowed). The image's health check runs against a real gateway.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_project.config import load_config, parse_duration
from gateway_project.startup import check_exposure
from tests.e2e.gunicorn import GatewayProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
EVERY = "0.0.0.0"  # noqa: S104 - an address the check is given, never bound here


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _kube() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes, by kind (one of each)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "config.yaml"):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in objects, f"two {document['kind']} objects"
            objects[document["kind"]] = document
    return objects


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _assert_unprivileged(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        # A read-only root: /tmp (Prometheus's multiprocess files, tiktoken's cache) is a volume.
        assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])  # noqa: S108 - a mount path
        assert "memory" in container["resources"]["requests"] and "memory" in container["resources"]["limits"]
        env = _env(container)
        for secret in ("SECRET_KEY", "DATABASE_URL"):
            assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "llm-gateway-secrets", secret


def test_every_yaml_file_in_deploy_parses():
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 14
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_the_deployment_probes_ready_and_health_and_runs_unprivileged():
    deployment = _kube()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    _assert_unprivileged(pod)
    assert container["resources"]["requests"]["cpu"]  # the HPA scales on CPU utilisation of this request
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    # The kubelet must not SIGKILL a pod while gunicorn still drains streams (turn_timeout + 30 s).
    config = load_config(KUBE / "config.yaml")
    assert pod["terminationGracePeriodSeconds"] > config.server.turn_timeout + 30 + 5


def test_the_deployment_reads_its_config_from_the_configmap_and_its_keys_from_the_secret():
    pod = _kube()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    kustomization = _yaml(KUBE / "kustomization.yaml")
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["config.yaml"]
    volume = next(v for v in pod["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == generator["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env["GATEWAY_CONFIG"]["value"] == f"{mount['mountPath']}/config.yaml"
    # Every ${VAR} the config reads comes from the Secret (provider keys optional).
    uncommented = "\n".join(line.split("#")[0] for line in (KUBE / "config.yaml").read_text().splitlines())
    for variable in re.findall(r"\$\{(\w+)", uncommented):
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "llm-gateway-secrets", variable
    # The probes' and Prometheus's Host is the pod IP: ALLOWED_HOSTS lists it, defined before it.
    names = list(env)
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"].split(",")
    assert names.index("POD_IP") < names.index("ALLOWED_HOSTS")
    assert "*" not in env["ALLOWED_HOSTS"]["value"].split(",")
    for resource in kustomization["resources"]:
        assert (KUBE / resource).is_file(), resource


def test_the_shipped_configs_are_valid_and_may_listen_on_every_interface():
    for path in (KUBE / "config.yaml", DEPLOY / "compose" / "config.yaml"):
        config = load_config(path)
        assert config.auth.enabled, path
        assert config.server.bind == "0.0.0.0:8080", path
        check_exposure(config, [(EVERY, 8080)])
        assert config.rate_limit.enabled and config.observability.enabled, path


def test_service_pdb_and_hpa_select_the_deployment():
    objects = _kube()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # Never fewer pods than the PDB can keep one of while another drains.
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_the_job_runs_migrate_unprivileged():
    job = _kube()["Job"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "manage.py", "migrate", "--no-input"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    _assert_unprivileged(pod)
    # The config it names is in the image: the example file, which .dockerignore lets through.
    assert _env(container)["GATEWAY_CONFIG"]["value"] == "/app/config.example.yaml"
    load_config(ROOT / "config.example.yaml")
    assert "config.example.yaml" not in (ROOT / ".dockerignore").read_text().split()


def test_the_dockerfile_is_multi_stage_non_root_and_healthchecked():
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime")
    user = [rest for word, rest in instructions if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "manage.py collectstatic" in text
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "requirements-dev" not in code
    assert "COPY requirements.txt" in text
    [healthcheck] = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "/app/deploy/healthcheck.py" in healthcheck
    [command] = [rest for word, rest in instructions if word == "CMD"]
    assert command == '["gunicorn", "-c", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi"]'
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "config.yaml", "var", "tests", "requirements-dev.txt"):
        assert path in ignored, path
    assert "!deploy/healthcheck.py" in ignored


def test_compose_runs_the_whole_stack_with_the_rules_and_the_dashboard_in_deploy():
    compose = _yaml(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) >= {"gateway", "migrate", "postgres", "redis", "prometheus", "jaeger", "grafana"}
    # Every host file a service mounts exists (relative paths are relative to deploy/).
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    prometheus = _yaml(DEPLOY / "compose" / "prometheus.yml")
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    [target] = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    host = target.split(":")[0]
    assert host in services
    gateway = services["gateway"]
    assert host in gateway["environment"]["ALLOWED_HOSTS"].split(",")
    assert gateway["environment"]["ALLOWED_HOSTS"].split(",")[0] == "localhost"  # the image's HEALTHCHECK
    assert all(port.startswith("127.0.0.1:") for s in services.values() for port in s.get("ports", []))
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    config = load_config(DEPLOY / "compose" / "config.yaml")
    assert config.observability.tracing.exporter.endpoint.split(":")[0] in services
    # The gateway drains for turn_timeout + 30 s on a stop: compose must not kill it before.
    assert parse_duration(gateway["stop_grace_period"]) > config.server.turn_timeout + 30
    grafana = {volume.split(":")[1]: volume.split(":")[0] for volume in services["grafana"]["volumes"]}
    assert grafana["/var/lib/grafana/dashboards/llm-gateway.json"] == "./grafana/dashboard.json"
    dashboards = _yaml(DEPLOY / "compose" / "grafana" / "dashboards.yml")
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasources = _yaml(DEPLOY / "compose" / "grafana" / "datasources.yml")["datasources"]
    assert any(d["type"] == "prometheus" and d["isDefault"] and "prometheus:9090" in d["url"] for d in datasources)


def test_promtool_accepts_the_compose_scrape_config_with_the_rules(tmp_path):
    # The paths as the container sees them, rebuilt in a temporary directory.
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    config = (DEPLOY / "compose" / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    # promtool comes with Debian's prometheus, which scripts/test installs.
    promtool = shutil.which("promtool") or "promtool"
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py")], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], **env})


@pytest.mark.e2e
def test_the_image_healthcheck_passes_against_a_gateway_that_lists_only_its_public_name():
    config = "logging: {format: text, level: warn}\nproviders: {demo: {type: demo}}\n"
    with GatewayProcess(config, workers=1, env={"ALLOWED_HOSTS": ".gateway.example.com,127.0.0.1"}) as gw:
        bind = f"0.0.0.0:{gw.port}"  # what the image sets; the check connects to loopback
        ok = _healthcheck({"GATEWAY_BIND": bind, "ALLOWED_HOSTS": "*,.gateway.example.com"})
        assert ok.returncode == 0, ok.stderr
        refused = _healthcheck({"GATEWAY_BIND": bind, "ALLOWED_HOSTS": "other.example.com"})
        assert refused.returncode == 1 and "Host: other.example.com" in refused.stderr
        assert _healthcheck({"GATEWAY_BIND": f"127.0.0.1:{free_port()}"}).returncode == 1
