"""POST /v1/chat/completions in process: the JSON answer, what the upstream is sent, finish reasons,
usage, and the refusals of what the gateway cannot serve."""

from __future__ import annotations

import json
import logging

import pytest

from tests.contract import validate
from tests.fakes.openai_upstream import Fail, Reply
from tests.surfaces.chat import PATH, chat

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"], "additionalProperties": False},
                                            "strict": True}}
PARIS_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_it_answers_a_chat_completion(api, fake_openai):
    fake_openai.script(Reply(text="Hello there.", prompt_tokens=12, completion_tokens=3, cached_tokens=4,
                             reasoning_tokens=1))
    response = chat(api, messages=[{"role": "user", "content": "Hi"}])
    assert response.status_code == 200
    body = response.json()
    validate("ChatCompletion", body)
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 48
    assert body["object"] == "chat.completion" and body["model"] == "gpt-test"
    assert isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello there.", "refusal": None, "annotations": []}}]
    assert body["usage"] == {
        "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}}
    assert "system_fingerprint" not in body  # the spec types it a string; the gateway has none to give


def test_every_kind_of_message_reaches_the_upstream_in_its_place(api, fake_openai):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "name": "ada", "content": [
            {"type": "text", "text": "What is this, and the weather?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [PARIS_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert chat(api, messages=messages, tools=[WEATHER]).status_code == 200
    sent = fake_openai.last.json["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this, and the weather?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [PARIS_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": None, "refusal": "No."},
        {"role": "user", "content": "Thanks"},
    ]


def test_parameters_are_mapped_for_the_upstream(api, fake_openai):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    response = chat(api, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                    parallel_tool_calls=False, max_tokens=5, temperature=0.2, top_p=0.5, user="u-1",
                    response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema,
                                                                             "strict": True}})
    assert response.status_code == 200
    sent = fake_openai.last.json
    assert sent["tools"] == [WEATHER]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    # Chat's minimum is 1: a value under the Responses API's 16 is carried, not refused.
    assert sent["max_completion_tokens"] == 5
    assert (sent["temperature"], sent["top_p"], sent["user"]) == (0.2, 0.5, "u-1")
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "A", "schema": schema,
                                                                               "strict": True}}


@pytest.mark.parametrize(("sent", "upstream"), [
    ({"response_format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
    ({"response_format": {"type": "text"}}, {}),
    ({"tool_choice": "none"}, {"tool_choice": "none"}),
    ({"tool_choice": "required", "tools": [WEATHER]}, {"tool_choice": "required"}),
    ({"max_completion_tokens": 300, "max_tokens": 7}, {"max_completion_tokens": 300}),
    # A Chat upstream has no allowed_tools: all the tools are offered, as for /v1/responses.
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}, "tools": [WEATHER]},
     {"tools": [WEATHER]}),
])
def test_formats_choices_and_limits(api, fake_openai, sent, upstream):
    assert chat(api, **sent).status_code == 200
    received = fake_openai.last.json
    for key, value in upstream.items():
        assert received[key] == value
    if not upstream:
        assert "response_format" not in received


def test_tool_calls_come_back_with_finish_reason_tool_calls(api, fake_openai):
    fake_openai.script(Reply(text="", tool_calls=[
        {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'}]))
    body = chat(api, tools=[WEATHER]).json()
    validate("ChatCompletion", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]


@pytest.mark.parametrize(("upstream_reason", "chat_reason"), [("length", "length"),
                                                              ("content_filter", "content_filter")])
def test_limits_map_to_their_finish_reasons(api, fake_openai, upstream_reason, chat_reason):
    fake_openai.script(Reply(text="Cut", finish_reason=upstream_reason))
    body = chat(api).json()
    validate("ChatCompletion", body)
    assert body["choices"][0]["finish_reason"] == chat_reason
    assert body["choices"][0]["message"]["content"] == "Cut"


def test_a_refusal_is_the_messages_refusal(api, fake_openai):
    fake_openai.script(Reply(text="", refusal="I can't help with that."))
    body = chat(api).json()
    validate("ChatCompletion", body)
    assert body["choices"][0]["message"]["refusal"] == "I can't help with that."
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][0]["finish_reason"] == "stop"


def test_no_usage_from_the_upstream_means_no_usage_key(api, fake_openai):
    fake_openai.script(Reply(send_usage=False))
    body = chat(api).json()
    validate("ChatCompletion", body)
    assert "usage" not in body


def test_upstream_failures_are_openai_errors_with_their_status(api, fake_openai):
    fake_openai.script(Fail(500, "boom"))
    response = chat(api)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    fake_openai.script(Fail(429, "slow down", headers={"Retry-After": "3"}))
    response = chat(api)
    assert response.status_code == 429 and response["Retry-After"] == "3"


def test_an_unknown_model_is_refused_as_by_responses(api):
    response = chat(api, model="no-such-model")
    same = api.create(model="no-such-model", input="Hi")
    assert response.status_code == same.status_code == 400
    assert response.json() == same.json()
    assert response.json()["error"]["param"] == "model"


def test_other_methods_are_a_json_405(api):
    response = api.get(PATH)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- parameters accepted and ignored, and refused -----------------------------------------------

def test_parameters_the_gateway_does_not_act_on_are_accepted(api, fake_openai, caplog):
    caplog.set_level(logging.DEBUG, logger="surfaces_app.chat_completions.translate")
    response = chat(api, stop=["\n"], seed=7, logprobs=True, top_logprobs=2, logit_bias={"50256": -100},
                    prediction={"type": "content", "content": "x"}, web_search_options={}, n=1,
                    modalities=["text"], some_future_parameter={"x": 1}, presence_penalty=0.5,
                    reasoning_effort="low", verbosity="low", service_tier="auto", metadata={"k": "v"})
    assert response.status_code == 200, response.content
    validate("ChatCompletion", response.json())
    sent = fake_openai.last.json
    for ignored in ("seed", "logprobs", "logit_bias", "prediction", "some_future_parameter"):
        assert ignored not in sent
    assert sent["stop"] == ["\n"]  # acted on: see test_stop_sequences_reach_the_upstream
    assert ("chat completions: parameters accepted and ignored: seed, logprobs, top_logprobs, logit_bias, "
            "prediction, web_search_options, some_future_parameter") in caplog.messages


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"n": 2}, "n", "invalid_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"stop": []}, "stop", "empty_array"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"function_call": "auto"}, "function_call", "unsupported_parameter"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", "unsupported_parameter"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"messages": []}, "messages", "invalid_value"),
    ({"messages": None}, "messages", "invalid_type"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]", "invalid_value"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}, "messages[1].content",
     "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc"}}]}]},
     "messages[0].content[0].image_url.url", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0]", "unsupported_content"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]", "invalid_value"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "missing_required_parameter"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "type": "function",
                                                                         "function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].function.arguments", "missing_required_parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type", "invalid_value"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function", "missing_required_parameter"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "missing_required_parameter"),
    ({"response_format": {"type": "yaml"}}, "response_format", "invalid_value"),
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"temperature": "1"}, "temperature", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", "invalid_value"),
    ({"model": ""}, "model", "invalid_value"),
    ({"metadata": {str(n): "v" for n in range(17)}}, "metadata", "invalid_value"),
])
def test_bad_requests_name_the_chat_parameter(api, fake_openai, body, param, code):
    response = chat(api, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error"), error
    assert fake_openai.requests == []  # nothing reached the upstream


def test_a_missing_model_or_a_body_that_is_not_an_object_is_a_400(api):
    response = api.post(PATH, {"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    response = api.post(PATH, "[1]")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    response = api.post(PATH, b"{not json")
    assert response.status_code == 400


def test_a_message_whose_content_is_all_empty_is_a_400(api, fake_openai):
    response = chat(api, messages=[{"role": "assistant", "content": ""}])
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert json.loads(response.content)["error"]["code"] == "invalid_value"
