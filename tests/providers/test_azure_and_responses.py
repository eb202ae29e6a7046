"""Azure OpenAI addressing and credentials; the native Responses mode of openai entries."""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiClient
from tests.fakes import openai_responses_upstream as resp
from tests.providers.harness import Fakes, final_response, output_text, providers_config


def test_azure_uses_deployment_path_default_api_version_and_api_key(api: ApiClient, fakes: Fakes) -> None:
    body = final_response(api.create(model="azure-model", input="hi"), False)
    sent = fakes.azure.last
    assert sent.path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-12-01-preview"
    assert sent.headers["api-key"] == "az-key" and "authorization" not in sent.headers
    assert output_text(body) == "Hello from the fake upstream."


def test_azure_api_version_is_configurable(api: ApiClient, fakes: Fakes, settings: Any) -> None:
    settings.GATEWAY = providers_config(fakes, provider_overrides={"azure": {"api_version": "2025-01-01"}})
    api.create(model="azure-model", input="hi")
    assert fakes.azure.last.path.endswith("?api-version=2025-01-01")


def test_responses_mode_replays_the_chain_statelessly(api: ApiClient, fakes: Fakes) -> None:
    first = final_response(api.create(model="responses-model", input="one", instructions="Be nice."), False)
    api.create(model="responses-model", input="two", previous_response_id=first["id"])
    sent = fakes.responses.last
    assert sent.headers["authorization"] == "Bearer sk-resp"
    body = sent.json
    assert body["store"] is False and "previous_response_id" not in body
    # Instructions are per request (not carried over), items lose the gateway's ids.
    assert "instructions" not in body
    assert [(i["role"], i["content"][0]["text"]) for i in body["input"]] == [
        ("user", "one"), ("assistant", "Hello from the fake Responses API."), ("user", "two")]
    assert all("id" not in item for item in body["input"])


def test_responses_mode_maps_a_content_filter_stop(api: ApiClient, fakes: Fakes) -> None:
    for stream in (False, True):
        fakes.responses.script(resp.Reply(text="partial", incomplete_reason="content_filter"))
        body = final_response(api.create(model="responses-model", input="x", stream=stream), stream)
        assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "content_filter"}
