"""POST /v1/responses, non-streaming, against the fake OpenAI upstream."""

from __future__ import annotations

import json

import pytest

from conversations_app.models import Conversation, Item, StoredResponse
from tests.contract import validate
from tests.fakes.openai_upstream import Reply


def test_it_answers_with_the_recommended_response_object(api, fake_openai):
    fake_openai.script(Reply(text="Hi there!", prompt_tokens=12, completion_tokens=3, cached_tokens=4,
                             reasoning_tokens=1))
    response = api.create(model="gpt-test", input="Hello")
    assert response.status_code == 200
    assert response["content-type"] == "application/json"
    assert response["x-request-id"]
    body = response.json()
    validate("Response", body)
    assert body["id"].startswith("resp_") and len(body["id"]) == 53
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert isinstance(body["created_at"], int) and isinstance(body["completed_at"], int)
    assert body["model"] == "gpt-test"
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Hi there!", "annotations": [], "logprobs": []}]
    assert body["usage"] == {
        "input_tokens": 12, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 15,
    }
    for key, value in {"temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [], "store": True,
                       "parallel_tool_calls": True, "truncation": "disabled", "metadata": {},
                       "text": {"format": {"type": "text"}}, "background": False, "service_tier": "default",
                       "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0,
                       "max_tool_calls": None, "safety_identifier": None, "prompt_cache_key": None}.items():
        assert body[key] == value, key


def test_it_sends_the_upstream_a_chat_completion_request(api, fake_openai):
    api.create(model="gpt-test", input="Hello", instructions="Be brief.", temperature=0.2, top_p=0.9,
               max_output_tokens=64, user="u-1", metadata={"team": "a"})
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-upstream-key"
    assert sent.json == {
        "model": "gpt-4o-mini-upstream",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "user": "u-1",
    }


def test_it_echoes_request_settings(api):
    body = api.create(model="gpt-test", input="x", metadata={"k": "v"}, temperature=0.5, user="someone",
                      max_output_tokens=100, instructions="sys", prompt_cache_key="pck",
                      prompt_cache_retention="24h", reasoning={"effort": "low"}).json()
    validate("Response", body)
    assert body["prompt_cache_retention"] == "24h"
    assert body["reasoning"] == {"effort": "low"}
    assert body["metadata"] == {"k": "v"}
    assert body["temperature"] == 0.5
    assert body["user"] == "someone"
    assert body["max_output_tokens"] == 100
    assert body["instructions"] == "sys"
    assert body["prompt_cache_key"] == "pck"


def test_it_stores_the_turn_before_answering(api, fake_openai):
    fake_openai.script(Reply(text="Stored answer"))
    body = api.create(model="gpt-test", input="Remember me").json()
    record = StoredResponse.objects.get(pk=body["id"])
    assert record.status == "completed"
    assert record.conversation.turn_count == 1
    items = list(Item.objects.filter(response=record).order_by("kind", "position").values_list("kind", "type"))
    assert items == [(Item.Kind.INPUT, "message"), (Item.Kind.OUTPUT, "message")]
    assert api.get(f"/v1/responses/{body['id']}").json() == body


def test_store_false_writes_nothing(api):
    body = api.create(model="gpt-test", input="ephemeral", store=False).json()
    assert body["store"] is False
    assert body["status"] == "completed"
    assert StoredResponse.objects.count() == 0 and Conversation.objects.count() == 0
    assert api.get(f"/v1/responses/{body['id']}").status_code == 404


def test_it_translates_images_and_item_lists(api, fake_openai):
    api.create(model="gpt-test", input=[
        {"role": "developer", "content": "dev rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
        ]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "input_text", "text": "Sure?"}]},
    ])
    assert fake_openai.last.json["messages"] == [
        {"role": "developer", "content": "dev rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        ]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]


def test_it_translates_json_schema_text_format(api, fake_openai):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    body = api.create(model="gpt-test", input="json please",
                      text={"format": {"type": "json_schema", "name": "thing", "schema": schema,
                                       "strict": True}}).json()
    assert fake_openai.last.json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert body["text"]["format"] == {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    validate("Response", body)


def test_it_marks_a_length_cut_as_incomplete(api, fake_openai):
    fake_openai.script(Reply(text="Partial", finish_reason="length"))
    body = api.create(model="gpt-test", input="long story", max_output_tokens=16).json()
    validate("Response", body)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["completed_at"] is None
    assert body["output"][0]["status"] == "incomplete"
    assert StoredResponse.objects.get(pk=body["id"]).status == "incomplete"


def test_it_maps_a_content_filter_stop(api, fake_openai):
    fake_openai.script(Reply(text="", finish_reason="content_filter"))
    body = api.create(model="gpt-test", input="x").json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "content_filter"}


def test_it_passes_a_refusal_through(api, fake_openai):
    fake_openai.script(Reply(text="", refusal="I can't help with that."))
    body = api.create(model="gpt-test", input="x").json()
    validate("Response", body)
    assert body["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_usage_is_null_when_the_upstream_reports_none(api, fake_openai):
    fake_openai.script(Reply(send_usage=False))
    body = api.create(model="gpt-test", input="x").json()
    assert body["usage"] is None  # never an estimate
    assert api.get(f"/v1/responses/{body['id']}").json()["usage"] is None


def test_models_lists_the_configured_models(api):
    body = api.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["gpt-test", "demo"]


def test_health_and_ready(api):
    assert api.get("/health").json() == {"status": "healthy"}
    ready = api.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "healthy"


@pytest.mark.parametrize("incoming, echoed", [("abc-123", True), ("bad id\nwith newline", False), ("x" * 300, False)])
def test_it_returns_a_request_id(api, incoming, echoed):
    response = api.client.get("/health", headers={"X-Request-ID": incoming})
    assert (response["x-request-id"] == incoming) is echoed
    assert response["x-request-id"]


def test_the_demo_model_answers_offline(api):
    body = api.create(model="demo", input="hello demo").json()
    assert body["status"] == "completed"
    assert "hello demo" in body["output"][0]["content"][0]["text"]
    json.dumps(body)
