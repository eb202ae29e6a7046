"""Anthropic specifics: headers, system prompt, alternating roles, max_tokens, images, pings,
mid-stream errors, refusals and cache usage."""

from __future__ import annotations

from tests.conftest import ApiClient, sse_events
from tests.fakes.anthropic_upstream import Reply
from tests.fakes.steps import Fail
from tests.providers.harness import Fakes, final_response, output_text

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_it_sends_key_version_system_and_a_default_max_tokens(api: ApiClient, fakes: Fakes) -> None:
    api.create(model="claude", instructions="Be brief.", input=[
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ])
    sent = fakes.anthropic.last
    assert sent.headers["x-api-key"] == "sk-ant" and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["system"] == "Be brief.\n\nAnswer in French."
    assert sent.json["max_tokens"] == 4096
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_consecutive_turns_of_one_role_are_merged_and_images_sent(api: ApiClient, fakes: Fakes) -> None:
    api.create(model="claude", max_output_tokens=100, input=[
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"},
                                     {"type": "input_image", "image_url": PNG},
                                     {"type": "input_image", "image_url": "https://example.com/cat.jpg"}]},
        {"role": "assistant", "content": "a1"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "third"},
    ])
    body = fakes.anthropic.last.json
    assert body["max_tokens"] == 100
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert body["messages"][1]["content"] == [{"type": "text", "text": "a1"}, {"type": "text", "text": "a2"}]


def test_pings_are_ignored_and_early_usage_is_replaced_by_the_final_one(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Reply(text="one two three", pings=True, input_tokens=4, output_tokens=3))
    events = sse_events(api.create(model="claude", input="hi", stream=True))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["one", " two", " three"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 3  # not message_start's placeholder 1


def test_a_mid_stream_error_event_fails_the_response_and_keeps_the_text(api: ApiClient, fakes: Fakes) -> None:
    # message_start, ping, block start, two deltas, then `error`.
    fakes.anthropic.script(Reply(text="partial answer here", error_after=5))
    events = sse_events(api.create(model="claude", input="hi", stream=True))
    assert events[-1]["type"] == "response.failed"
    assert "Overloaded" in events[-1]["response"]["error"]["message"]
    stored = api.get(f"/v1/responses/{events[-1]['response']['id']}").json()
    assert stored["status"] == "failed" and output_text(stored) == "partial answer"


def test_a_refusal_stop_reason_becomes_a_refusal_part(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Reply(text="", stop_reason="refusal"))
    body = final_response(api.create(model="claude", input="something bad"), False)
    parts = body["output"][0]["content"]
    assert parts[0]["type"] == "refusal" and parts[0]["refusal"]
    assert body["status"] == "completed"


def test_an_invalid_request_passes_the_upstream_message_on(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Fail(400, "prompt is too long: 300000 tokens > 200000 maximum",
                                type="invalid_request_error"))
    response = api.create(model="claude", input="x")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "prompt is too long: 300000 tokens > 200000 maximum"


def test_rejected_credentials_are_a_502_that_does_not_leak_the_key(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Fail(401, "invalid x-api-key sk-ant", type="authentication_error"))
    response = api.create(model="claude", input="x")
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "anthropic" in message and "api_key" in message and "sk-ant" not in message
