import time

import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess

pytestmark = pytest.mark.e2e

DEMO_CONFIG = """
logging: {format: text, level: warn}
providers: {demo: {type: demo}}
models: [{name: demo, provider: demo}]
"""


def test_it_serves_the_demo_model_under_gunicorn():
    with GatewayProcess(DEMO_CONFIG) as gw:
        response = requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "hi"}, timeout=10)
        assert response.status_code == 200, gw.log()
        body = response.json()
        assert body["status"] == "completed"
        again = requests.get(f"{gw.base_url}/responses/{body['id']}", timeout=10)
        assert again.json()["output"] == body["output"]


def test_ready_is_503_naming_the_database_when_it_is_unreachable():
    with GatewayProcess(DEMO_CONFIG, database_url="postgres://postgres@127.0.0.1:9/nowhere") as gw:
        started = time.monotonic()
        response = requests.get(f"{gw.url}/ready", timeout=15)
        assert time.monotonic() - started < 1
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"].startswith("unhealthy")
        assert body["checks"]["models"] == "healthy"
        # The API stays JSON even when the database is down.
        failed = requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "x",
                                                                  "previous_response_id": "resp_1"}, timeout=15)
        # Unavailable, not broken: a 503 the SDK retries, within the default 1.5 s pool wait.
        assert failed.status_code == 503
        assert failed.json()["error"]["type"] == "server_error"
        assert failed.json()["error"]["code"] == "database_unavailable"
        assert failed.headers["Retry-After"]
        assert failed.headers["x-request-id"]
