"""Under real gunicorn: a provider entry without its key is named in the start-up line, not an exit."""

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


def test_a_keyless_provider_is_named_in_the_start_up_line_and_the_rest_is_served() -> None:
    with GatewayProcess(CONFIG) as gw:
        lines = [line for line in gw.log().splitlines() if line.startswith("gateway: listening on ")]
        assert len(lines) == 1, gw.log()
        assert lines[0].startswith(f"gateway: listening on {gw.url} (2 workers), config ")
        assert lines[0].endswith("; providers without an api_key, whose models answer 503: "
                                 "anthropic (set PROV_E2E_MISSING_ANTHROPIC_KEY)")
        assert "config warning" not in gw.log()
        ready = requests.get(f"{gw.url}/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["checks"]["providers"].startswith("degraded: provider 'anthropic' has no api_key")
        refused = requests.post(f"{gw.base_url}/responses", json={"model": "claude", "input": "hi"}, timeout=5)
        assert refused.status_code == 503
        assert "PROV_E2E_MISSING_ANTHROPIC_KEY" in refused.json()["error"]["message"]
        assert requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "hi"},
                             timeout=5).status_code == 200
