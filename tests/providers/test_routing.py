"""Model routing: names and aliases, unknown models, provider entries without their key."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_project.config import ConfigError, parse_config
from tests.conftest import ApiClient
from tests.providers.harness import Fakes, providers_config


def test_an_alias_routes_to_its_model(api: ApiClient, fakes: Fakes, settings: Any) -> None:
    settings.GATEWAY = providers_config(fakes, models=[
        {"name": "claude", "provider": "anthropic", "provider_model_id": "claude-upstream", "aliases": ["smart"]}])
    response = api.create(model="smart", input="hi")
    assert response.status_code == 200
    assert fakes.anthropic.last.json["model"] == "claude-upstream"


def test_an_unknown_model_is_a_400_and_no_upstream_is_called(api: ApiClient, fakes: Fakes) -> None:
    response = api.create(model="gpt-nope", input="hi")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_found"
    assert all(fake.requests == [] for fake in fakes.all())


def _keyless_anthropic(fakes: Fakes) -> Any:
    config = providers_config(fakes, provider_overrides={"anthropic": {"api_key": "${PROV_TEST_UNSET_KEY}"}})
    return config


def test_a_model_whose_provider_has_no_key_is_a_503_saying_what_to_set(api: ApiClient, fakes: Fakes,
                                                                      settings: Any) -> None:
    settings.GATEWAY = _keyless_anthropic(fakes)
    response = api.create(model="claude", input="hi")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "provider_not_configured"
    assert "provider 'anthropic' has no api_key" in error["message"] and "PROV_TEST_UNSET_KEY" in error["message"]
    assert fakes.anthropic.requests == []
    # The other models still work.
    assert api.create(model="gemini", input="hi").status_code == 200


def test_ready_reports_a_keyless_provider_but_stays_ready_while_models_are_servable(api: ApiClient, fakes: Fakes,
                                                                                   settings: Any) -> None:
    settings.GATEWAY = _keyless_anthropic(fakes)
    response = api.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["providers"].startswith("degraded: provider 'anthropic' has no api_key")


def test_ready_is_503_when_no_model_can_be_served(api: ApiClient, fakes: Fakes, settings: Any) -> None:
    settings.GATEWAY = parse_config({
        "providers": {"anthropic": {"type": "anthropic"}},
        "models": [{"name": "claude", "provider": "anthropic"}],
    })
    response = api.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["providers"].startswith("unhealthy: no model can be served")


def test_ready_is_healthy_when_every_provider_has_its_key(api: ApiClient) -> None:
    assert api.get("/ready").json()["checks"]["providers"] == "healthy"


def test_start_up_warnings_name_each_keyless_entry() -> None:
    config = parse_config({"providers": {"a": {"type": "anthropic", "api_key": "${PROV_A_KEY}"},
                                         "g": {"type": "google"}, "local": {"type": "openai", "endpoint": "http://x"},
                                         "d": {"type": "demo"}}})
    assert config.missing_key_warnings() == [
        "provider 'a' has no api_key; set PROV_A_KEY in the gateway's environment and restart the gateway",
        "provider 'g' has no api_key; set providers.g.api_key in the config file (e.g. api_key: ${G_API_KEY}) "
        "and restart the gateway",
    ]


@pytest.mark.parametrize(("data", "message"), [
    ({"providers": {"p": {"type": "openai"}}, "models": [{"name": "m", "provider": "p", "fallbacks": ["x"]}]},
     "models[0].fallbacks: 'x' is not a configured model"),
    ({"providers": {"p": {"type": "openai"}}, "models": [{"name": "m", "provider": "p", "aliases": ["n"]},
                                                         {"name": "n", "provider": "p"}]},
     "models[1]: model name or alias 'n' is used twice"),
    ({"providers": {"p": {"type": "azureopenai", "api_key": "k"}}}, "providers.p: an azureopenai provider needs"),
    ({"providers": {"p": {"type": "anthropic", "api": "responses"}}}, "providers.p: `api: responses` is only"),
    ({"providers": {"p": {"type": "openai", "circuit_breaker": {"ratio": 1}}}},
     "providers.p.circuit_breaker.ratio: unknown key"),
    ({"providers": {"p": {"type": "openai", "idle_timeout": "soon"}}}, "providers.p.idle_timeout: expected a duration"),
])
def test_bad_routing_and_resilience_config_is_one_clear_line(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value).startswith(message), str(caught.value)
