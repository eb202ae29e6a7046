"""POST /v1/messages in Responses terms: what the upstream is sent for each Messages parameter and
content block (here a Chat Completions upstream, the fake recording it), and the 400s of bad input."""

from __future__ import annotations

import json

import pytest

from surfaces_app.anthropic_messages import schema, translate
from tests.surfaces.messages import create, post

pytestmark = pytest.mark.django_db

PNG = "iVBORw0KGgo="


def sent(fake_openai, **body):
    response = create(**body)
    assert response.status_code == 200, response.content
    return fake_openai.last.json


def test_system_messages_and_settings_reach_the_upstream(gateway, fake_openai):
    payload = sent(fake_openai, model="gpt-test", max_tokens=300, temperature=0.3, top_p=0.9,
                   system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
                   metadata={"user_id": "user-7"}, top_k=5, stop_sequences=["END"],
                   messages=[{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                             {"role": "user", "content": [{"type": "text", "text": "How are you?",
                                                           "cache_control": {"type": "ephemeral"}}]}])
    assert payload["model"] == "gpt-4o-mini-upstream"
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert payload["max_completion_tokens"] == 300
    assert payload["temperature"] == 0.3 and payload["top_p"] == 0.9
    assert payload["user"] == "user-7"
    # stop_sequences are Chat's `stop`; top_k is accepted and not acted on.
    assert payload["stop"] == ["END"] and "top_k" not in payload


def test_a_max_tokens_below_openais_minimum_is_carried_as_asked(gateway, fake_openai):
    assert sent(fake_openai, model="gpt-test", max_tokens=1)["max_completion_tokens"] == 1


def test_images_become_image_parts(gateway, fake_openai):
    payload = sent(fake_openai, model="gpt-test", messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]}])
    parts = payload["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    assert parts[1]["image_url"]["url"] == "https://example.com/cat.jpg"


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages(gateway, fake_openai):
    payload = sent(fake_openai, model="gpt-test",
                   tools=[{"name": "weather", "description": "The weather.",
                           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                   tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
                   messages=[
                       {"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "content": [
                           {"type": "text", "text": "Let me look."},
                           {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                       {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "Sunny, "}, {"type": "text", "text": "21 C"}]},
                           {"type": "text", "text": "Thanks."}]},
                   ])
    assert payload["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "The weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert payload["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert payload["parallel_tool_calls"] is False
    assistant, tool, user = payload["messages"][1:]
    assert assistant["content"] == "Let me look."
    assert assistant["tool_calls"][0]["id"] == "toolu_1"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 21 C"}
    assert user == {"role": "user", "content": "Thanks."}


@pytest.mark.parametrize(("choice", "expected"), [({"type": "auto"}, "auto"), ({"type": "any"}, "required"),
                                                  ({"type": "none"}, "none")])
def test_tool_choice_modes(gateway, fake_openai, choice, expected):
    payload = sent(fake_openai, model="gpt-test", tool_choice=choice,
                   tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert payload["tool_choice"] == expected


def test_output_config_format_is_structured_output(gateway, fake_openai):
    schema_ = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    payload = sent(fake_openai, model="gpt-test", output_config={"format": {"type": "json_schema", "schema": schema_}})
    assert payload["response_format"]["type"] == "json_schema"
    assert payload["response_format"]["json_schema"]["schema"] == schema_


def test_blocks_without_a_responses_form_are_left_out(gateway, fake_openai):
    payload = sent(fake_openai, model="gpt-test", messages=[
        {"role": "user", "content": [{"type": "search_result", "source": "x", "title": "t", "content": []},
                                     {"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "anthropic-sig"},
                                          {"type": "redacted_thinking", "data": "opaque"},
                                          {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "Again"},
    ])
    assert payload["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                   {"role": "user", "content": "Again"}]


def _messages(*messages):
    return schema.parse_body(schema.MessagesRequest, json.dumps(
        {"model": "m", "max_tokens": 10, "messages": list(messages)}).encode()).messages


def test_documents_become_files_or_text():
    items = translate.input_items(_messages({"role": "user", "content": [
        {"type": "document", "title": "Spec", "source": {"type": "base64", "media_type": "application/pdf",
                                                         "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "n1"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c1"}]}},
    ]}))
    assert items[0]["content"] == [
        {"type": "input_file", "filename": "Spec", "file_data": "data:application/pdf;base64,JVBERi0="},
        {"type": "input_file", "file_url": "https://example.com/a.pdf"},
        {"type": "input_text", "text": "Notes\n\nn1"},
        {"type": "input_text", "text": "c1"},
    ]


def test_a_thinking_block_the_gateway_made_goes_back_as_its_reasoning_item():
    item = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Because."}],
            "encrypted_content": "gAAAA.b=="}
    block = {"type": "thinking", "thinking": "Because.", "signature": translate.signature(item)}
    items = translate.input_items(_messages({"role": "user", "content": "Q"},
                                            {"role": "assistant", "content": [block, {"type": "text", "text": "A"}]}))
    assert items[1] == item
    assert items[2]["role"] == "assistant"


def test_claudes_own_thinking_blocks_are_carried_and_damaged_gateway_ones_left_out():
    items = translate.input_items(_messages({"role": "user", "content": "Q"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Because.", "signature": "claude-sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "Damaged.", "signature": translate.SIGNATURE_PREFIX + "rs_1"},
        {"type": "text", "text": "A"}]}))
    assert [(i["type"], i.get("encrypted_content")) for i in items] == [
        ("message", None), ("reasoning", "anthropic-thinking-signature:claude-sig"),
        ("reasoning", "anthropic-redacted-thinking:opaque"), ("message", None)]
    assert items[1]["summary"] == [{"type": "summary_text", "text": "Because."}]


def test_thinking_maps_to_reasoning_for_responses_native_upstreams():
    def reasoning(**body):
        request = schema.parse_body(schema.MessagesRequest, json.dumps(
            {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}], **body}).encode())
        return translate.responses_body(request).get("reasoning")

    assert reasoning(thinking={"type": "enabled", "budget_tokens": 2048}) == {"effort": "low", "summary": "auto"}
    assert reasoning(thinking={"type": "enabled", "budget_tokens": 32000})["effort"] == "high"
    assert reasoning(thinking={"type": "adaptive"})["effort"] == "medium"
    assert reasoning(output_config={"effort": "max"})["effort"] == "xhigh"
    assert reasoning(thinking={"type": "disabled"}) is None
    assert reasoning() is None


def test_anthropic_web_search_is_the_hosted_web_search():
    request = schema.parse_body(schema.MessagesRequest, json.dumps({
        "model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["example.com"],
                   "user_location": {"type": "approximate", "city": "Paris"}},
                  {"type": "bash_20250124", "name": "bash"}]}).encode())
    assert translate.responses_body(request)["tools"] == [
        {"type": "web_search", "filters": {"allowed_domains": ["example.com"]},
         "user_location": {"type": "approximate", "city": "Paris"}},
        {"type": "bash_20250124"},
    ]


@pytest.mark.parametrize(("body", "message"), [
    ({"max_tokens": None}, "Missing required parameter: 'max_tokens'."),
    ({"max_tokens": 0}, "Invalid value for 'max_tokens': Input should be greater than or equal to 1."),
    ({"max_tokens": "10"}, "Invalid value for 'max_tokens': Input should be a valid integer."),
    ({"messages": []}, "Invalid value for 'messages': List should have at least 1 item after validation, not 0."),
    ({"messages": [{"role": "system", "content": "x"}]},
     "Invalid value for 'messages[0].role': Input should be 'user' or 'assistant'."),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]},
     "Invalid value for 'messages[0].content[0].source': Invalid source: expected a `type` of base64, url or file."),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png;base64,AAAA", "data": "x"}}]}]},
     "Invalid value for 'messages[0].content[0].source.media_type': String should match pattern "
     "'^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$'."),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "Invalid value for 'messages[0].content[0]': tool_use blocks belong in assistant messages."),
    ({"temperature": 1.5}, "Invalid value for 'temperature': Input should be less than or equal to 1."),
    ({"tool_choice": {"type": "tool"}}, "Missing required parameter: 'tool_choice.name'."),
    ({"thinking": {"type": "enabled", "budget_tokens": 10}},
     "Invalid value for 'thinking.budget_tokens': Input should be greater than or equal to 1024."),
    ({"max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "Invalid value for 'thinking.budget_tokens': `max_tokens` must be greater than `thinking.budget_tokens`."),
])
def test_bad_input_is_a_400_naming_the_parameter(gateway, fake_openai, body, message):
    sent = {"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], **body}
    response = post("/v1/messages", {k: v for k, v in sent.items() if v is not None})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    assert fake_openai.requests == []
