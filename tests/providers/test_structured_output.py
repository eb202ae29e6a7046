"""`text.format` json_schema and json_object on every provider type, so `responses.parse` works
whatever model a client names: Chat gets `response_format`, Gemini `responseJsonSchema`, and
Anthropic a forced tool whose input is the answer (docs/providers.md)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ApiClient
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_upstream as chat
from tests.providers.harness import Fakes, final_response, output_text

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "name": "trip", "schema": SCHEMA, "strict": True}
ANSWER = {"city": "Paris", "days": 3}


def _script(fakes: Fakes, model: str) -> None:
    if model == "claude":
        fakes.anthropic.script(anth.Reply(text="", tool_calls=[
            {"id": "toolu_1", "name": "gateway_structured_output", "input": ANSWER}]))
    elif model == "gemini":
        fakes.gemini.script(gem.Reply(text=json.dumps(ANSWER)))
    else:
        fakes.chat.script(chat.Reply(text=json.dumps(ANSWER)))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["claude", "gemini", "chat-model"])
def test_json_schema_output_is_a_message_holding_the_json(api: ApiClient, fakes: Fakes, model: str, stream: bool):
    _script(fakes, model)
    body = final_response(api.post("/v1/responses", {"model": model, "input": "Plan a trip", "stream": stream,
                                                     "text": {"format": JSON_SCHEMA}}), stream)
    assert body["status"] == "completed"
    assert [item["type"] for item in body["output"]] == ["message"]
    assert json.loads(output_text(body)) == ANSWER
    assert body["text"]["format"]["name"] == "trip"

    if model == "claude":
        sent = fakes.anthropic.last.json
        assert sent["tools"] == [{"name": "gateway_structured_output", "input_schema": SCHEMA,
                                  "description": "Give the final answer, as the requested JSON."}]
        assert sent["tool_choice"] == {"type": "tool", "name": "gateway_structured_output"}
    elif model == "gemini":
        config = fakes.gemini.last.json["generationConfig"]
        assert config == {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}
    else:
        assert fakes.chat.last.json["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}


def test_anthropic_structured_output_beside_real_tools_lets_the_model_call_either(api: ApiClient, fakes: Fakes):
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    fakes.anthropic.script(anth.Reply(text="", tool_calls=[{"id": "toolu_1", "name": "get_weather", "input": {}}]))
    body = api.post("/v1/responses", {"model": "claude", "input": "x", "tools": [weather],
                                      "text": {"format": JSON_SCHEMA}}).json()
    sent = fakes.anthropic.last.json
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "gateway_structured_output"]
    assert sent["tool_choice"] == {"type": "any"}  # a real tool, or the answer through the output tool
    # A real tool call is a function_call the client runs; the turn is not yet the answer.
    assert [(item["type"], item["name"]) for item in body["output"]] == [("function_call", "get_weather")]


@pytest.mark.parametrize("model", ["claude", "gemini"])
def test_json_object_asks_for_any_json(api: ApiClient, fakes: Fakes, model: str):
    _script(fakes, model)
    body = api.post("/v1/responses", {"model": model, "input": "Reply in JSON",
                                      "text": {"format": {"type": "json_object"}}}).json()
    assert json.loads(output_text(body)) == ANSWER
    if model == "claude":
        assert fakes.anthropic.last.json["tools"][0]["input_schema"] == {"type": "object"}
    else:
        assert fakes.gemini.last.json["generationConfig"] == {"responseMimeType": "application/json"}
