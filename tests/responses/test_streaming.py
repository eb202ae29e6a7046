"""POST /v1/responses with "stream": true: the §1c event sequence, framing, and failures."""

from __future__ import annotations

import json

import pytest

from conversations_app.models import StoredResponse
from tests.conftest import sse_events, sse_frames
from tests.contract import validate
from tests.fakes.openai_upstream import Fail, Reply

TEXT_SEQUENCE = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
]


def test_it_streams_the_full_event_sequence(api, fake_openai):
    fake_openai.script(Reply(text="One two three", prompt_tokens=9, completion_tokens=3))
    response = api.create(model="gpt-test", input="count", stream=True)
    assert response.status_code == 200
    assert response["content-type"] == "text/event-stream"
    assert response["cache-control"] == "no-cache"
    events = sse_events(response)
    assert [e["type"] for e in events] == TEXT_SEQUENCE
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate("ResponseStreamEvent", event)
    created, completed = events[0]["response"], events[-1]["response"]
    # usage and user are null, as OpenAI sends them (the spec file's non-nullable typing is a known defect).
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["user"] is None
    assert completed["id"] == created["id"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "One two three"
    assert completed["usage"]["input_tokens"] == 9 and completed["usage"]["output_tokens"] == 3
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id for e in events[3:10] if "item_id" in e)
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "One two three"


def test_it_asks_the_upstream_for_usage_in_the_stream(api, fake_openai):
    sse_events(api.create(model="gpt-test", input="x", stream=True))
    assert fake_openai.last.json["stream"] is True
    assert fake_openai.last.json["stream_options"] == {"include_usage": True}


def test_the_streamed_turn_is_stored_before_completed_is_sent(api, fake_openai):
    frames = sse_frames(api.create(model="gpt-test", input="x", stream=True).streaming_content)
    for frame in frames:  # read lazily: stop at the terminal frame, before the generator finishes
        if frame.startswith(b"event: response.completed"):
            completed = json.loads(frame.split(b"data: ", 1)[1])["response"]
            break
    record = StoredResponse.objects.get(pk=completed["id"])
    assert record.status == "completed"
    assert api.get(f"/v1/responses/{completed['id']}").json() == completed
    assert list(frames) == []


def test_stream_usage_carries_cached_and_reasoning_tokens(api, fake_openai):
    fake_openai.script(Reply(prompt_tokens=20, completion_tokens=8, cached_tokens=16, reasoning_tokens=5))
    usage = sse_events(api.create(model="gpt-test", input="x", stream=True))[-1]["response"]["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 16, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 5}
    assert usage["total_tokens"] == 28


def test_it_streams_function_calls_as_their_own_items(api, fake_openai):
    fake_openai.script(Reply(text="", tool_calls=[
        {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"id": "call_b", "name": "get_time", "arguments": '{"tz":"CET"}'},
    ]))
    events = sse_events(api.create(model="gpt-test", input="weather and time?", stream=True, tools=[
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object"}},
    ]))
    for event in events:
        validate("ResponseStreamEvent", event)
    types = [e["type"] for e in events]
    assert "response.content_part.added" not in types
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"], e["item"]["call_id"]) for e in added] == [
        (0, "function_call", "call_a"), (1, "function_call", "call_b")]
    done = {e["output_index"]: e for e in events if e["type"] == "response.function_call_arguments.done"}
    assert done[0]["arguments"] == '{"city":"Paris"}' and done[0]["name"] == "get_weather"
    assert done[1]["arguments"] == '{"tz":"CET"}'
    final = events[-1]["response"]["output"]
    assert [(i["call_id"], i["status"]) for i in final] == [("call_a", "completed"), ("call_b", "completed")]


def test_a_length_cut_ends_with_response_incomplete(api, fake_openai):
    fake_openai.script(Reply(text="Cut short", finish_reason="length"))
    events = sse_events(api.create(model="gpt-test", input="x", stream=True, max_output_tokens=16))
    assert events[-1]["type"] == "response.incomplete"
    validate("ResponseStreamEvent", events[-1])
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_upstream_error_before_the_stream_is_an_http_error(api, fake_openai):
    fake_openai.script(Fail(500, "boom"))
    response = api.create(model="gpt-test", input="x", stream=True)
    assert response.status_code == 502
    assert response["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "server_error"
    assert StoredResponse.objects.count() == 0


def test_a_failure_mid_stream_ends_with_response_failed_and_is_stored(api, fake_openai):
    fake_openai.script(Reply(text="one two three four five six", drop_after=4))
    events = sse_events(api.create(model="gpt-test", input="x", stream=True))
    assert events[-1]["type"] == "response.failed"
    validate("ResponseStreamEvent", events[-1])
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "one two three"
    record = StoredResponse.objects.get(pk=failed["id"])
    assert record.status == "failed" and record.error is not None and record.error["code"] == "server_error"
    stored = api.get(f"/v1/responses/{failed['id']}").json()
    assert stored["status"] == "failed"
    assert stored["output"][0]["content"][0]["text"] == "one two three"


@pytest.mark.parametrize("store", [True, False])
def test_store_flag_is_echoed_in_the_stream(api, store):
    events = sse_events(api.create(model="gpt-test", input="x", stream=True, store=store))
    assert events[-1]["response"]["store"] is store
    assert StoredResponse.objects.filter(pk=events[-1]["response"]["id"]).exists() is store


def test_a_stream_whose_turn_cannot_be_stored_ends_failed_and_is_stored_so_later(api, fake_openai, monkeypatch):
    from django.db import OperationalError

    from conversations_app.store import store
    from responses_app import worker_lifecycle

    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(store.inner, "finish_turn", database_down)
    events = sse_events(api.create(model="gpt-test", input="x", stream=True))
    assert events[-1]["type"] == "response.failed"
    assert "could not be stored" in events[-1]["response"]["error"]["message"]
    assert "response.completed" not in [e["type"] for e in events]
    response_id = events[0]["response"]["id"]
    # The id the client saw exists from the start, and its end is written once the database answers.
    assert api.get(f"/v1/responses/{response_id}").json()["status"] == "in_progress"
    monkeypatch.undo()
    assert worker_lifecycle.retry_deferred() == 0
    stored = api.get(f"/v1/responses/{response_id}").json()
    assert stored["status"] == "failed"
    assert stored["error"]["message"] == events[-1]["response"]["error"]["message"]
    assert stored["output"][0]["content"][0]["text"] == events[-1]["response"]["output"][0]["content"][0]["text"]
