"""A real Prometheus (the Debian package) scraping a gunicorn-run gateway: the seed's example queries
return data, our alert rules load and evaluate, and every dashboard query is valid PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess, free_port
from tests.observability.e2e_config import gateway_yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# The seed's example queries. Its last one, `histogram_quantile(0.95, rate(...)) by (provider, model)`,
# is not valid PromQL (see test_the_seeds_literal_last_query_is_invalid); this is its valid form.
SEED_QUERIES = [
    "rate(http_requests_total[5m])",
    "histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]))",
    'rate(http_requests_total{status=~"5.."}[5m])',
    "rate(provider_tokens_total[1m]) * 60",
    "histogram_quantile(0.95, sum by (le, provider, model) (rate(provider_request_duration_seconds_bucket[5m])))",
]
# docs/observability.md's queries over django-prometheus's database families.
DATABASE_QUERIES = [
    "sum(rate(django_db_execute_total[5m])) / sum(rate(http_requests_total[5m]))",
    "histogram_quantile(0.95, sum by (le) (rate(django_db_query_duration_seconds_bucket[5m])))",
]
SEED_INVALID = "histogram_quantile(0.95, rate(provider_request_duration_seconds_bucket[5m])) by (provider, model)"


class Prometheus:
    def __init__(self, target: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="obs-prometheus-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": "llm-gateway", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "prometheus.log").read_text())
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str) -> dict:
        return requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(_fake_openai_server) -> Iterator[tuple[GatewayProcess, Prometheus]]:
    _fake_openai_server.reset()
    dead = {"dead": {"type": "openai", "api_key": "x", "endpoint": f"http://127.0.0.1:{free_port()}/v1"}}
    config = gateway_yaml(_fake_openai_server.url, extra_providers=dead, log_level="warn",
                          extra_models=[{"name": "broken", "provider": "dead"}])
    with GatewayProcess(config, workers=2) as gw:
        prometheus = Prometheus(f"127.0.0.1:{gw.port}")
        try:
            yield gw, prometheus
        finally:
            prometheus.close()


def traffic(gw: GatewayProcess) -> None:
    """Successes (streamed and not) and a 5xx (a provider nobody listens for)."""
    bodies = [{"model": "gpt-test", "input": "hi", "stream": index % 2 == 0} for index in range(5)]
    for body in [*bodies, {"model": "broken", "input": "hi"}]:
        try:
            _ = requests.post(f"{gw.base_url}/responses", json=body, timeout=30).content
        except requests.ConnectionError:
            # This test is about what Prometheus sees; a reset on a loaded 2-core CI box only
            # means this round sends one request fewer.
            continue


def test_every_seed_example_query_returns_data(stack: tuple[GatewayProcess, Prometheus]) -> None:
    assert_data_for(*stack, SEED_QUERIES)


def test_the_database_example_queries_return_data(stack: tuple[GatewayProcess, Prometheus]) -> None:
    assert_data_for(*stack, DATABASE_QUERIES)


def assert_data_for(gw: GatewayProcess, prometheus: Prometheus, queries: list[str]) -> None:
    pending = set(queries)
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        traffic(gw)
        for expr in list(pending):
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (expr, answer)
            if answer["data"]["result"]:
                pending.discard(expr)
        time.sleep(0.5)  # pacing the traffic between scrapes, not synchronisation
    assert not pending, f"no data for {pending}"


def test_the_seeds_literal_last_query_is_invalid(stack):
    _, prometheus = stack
    assert prometheus.query(SEED_INVALID)["status"] == "error"


def test_alert_rules_load_and_evaluate(stack):
    _, prometheus = stack
    deadline = time.monotonic() + 30
    while True:
        groups = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = [rule for rule in rules if not rule.get("lastEvaluation", "").startswith("0001")]
        if len(evaluated) == len(rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} >= {
        "GatewayHighErrorRate", "GatewayHighLatency", "ProviderErrorRate", "ConversationStoreErrors",
        "RateLimitHitRateHigh", "CircuitBreakerOpen"}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_every_dashboard_query_is_valid_promql(stack):
    _, prometheus = stack
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$job", ".*")
        answer = prometheus.query(concrete)
        assert answer["status"] == "success", (expr, answer)


def test_promtool_accepts_the_deploy_files():
    for args in (["check", "rules", "deploy/prometheus/alerts.yml"],
                 ["check", "config", "deploy/prometheus/prometheus.yml"]):
        result = subprocess.run([shutil.which("promtool") or "promtool", *args], cwd=ROOT, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout + result.stderr
