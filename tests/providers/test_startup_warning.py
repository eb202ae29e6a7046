"""Under real gunicorn: a provider entry without its key is one warning line at start-up, not an exit."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess

pytestmark = pytest.mark.e2e

CONFIG = """
logging: {format: text, level: warn}
providers:
  demo: {type: demo}
  anthropic: {type: anthropic, api_key: "${PROV_E2E_MISSING_ANTHROPIC_KEY}"}
models:
  - {name: demo, provider: demo}
  - {name: claude, provider: anthropic}
"""


def test_a_keyless_provider_is_reported_once_and_the_rest_is_served() -> None:
    with GatewayProcess(CONFIG) as gw:
        line = ("config warning: provider 'anthropic' has no api_key; set PROV_E2E_MISSING_ANTHROPIC_KEY in the "
                "gateway's environment and restart the gateway")
        assert gw.log().count(line) == 1, gw.log()
        ready = requests.get(f"{gw.url}/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["checks"]["providers"].startswith("degraded: provider 'anthropic' has no api_key")
        refused = requests.post(f"{gw.base_url}/responses", json={"model": "claude", "input": "hi"}, timeout=5)
        assert refused.status_code == 503
        assert "PROV_E2E_MISSING_ANTHROPIC_KEY" in refused.json()["error"]["message"]
        assert requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "hi"},
                             timeout=5).status_code == 200
