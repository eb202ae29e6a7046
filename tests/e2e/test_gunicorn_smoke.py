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
