"""The renderers on their own: Responses objects and events that the fake upstreams do not make
(citations, a call sent whole, a stream cut short by a shutdown), and a stored call in the admin."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.urls import reverse

from surfaces_app.chat_completions import render
from tests.contract import validate
from tests.surfaces.chat import chat

TURN: Any = SimpleNamespace(response_id="resp_" + "ab" * 24, created_at=datetime(2026, 1, 1, tzinfo=UTC),
                            request=SimpleNamespace(model="m"))


def _response(output: list[dict[str, Any]], status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"id": TURN.response_id, "created_at": 1767225600, "model": "m", "status": status, "output": output,
            "usage": None, "incomplete_details": None, "error": None, **extra}


def test_ids_correspond_both_ways():
    assert render.completion_id(TURN.response_id) == "chatcmpl-" + "ab" * 24
    assert render.response_id(render.completion_id(TURN.response_id)) == TURN.response_id


def test_citations_of_every_text_part_point_into_the_joined_content():
    cite = {"type": "url_citation", "start_index": 0, "end_index": 4, "url": "https://a.example", "title": "A"}
    output: list[dict[str, Any]] = [{"type": "reasoning", "id": "rs_1", "summary": []},
              {"type": "message", "role": "assistant", "content": [
                  {"type": "output_text", "text": "Paris is nice. ", "annotations": []},
                  {"type": "output_text", "text": "Rome too.", "annotations": [cite, {"type": "file_citation"}]}]}]
    body = render.completion(_response(output))
    validate("ChatCompletion", body)
    message = body["choices"][0]["message"]
    assert message["content"] == "Paris is nice. Rome too."
    assert message["annotations"] == [{"type": "url_citation", "url_citation": {
        "start_index": 15, "end_index": 19, "url": "https://a.example", "title": "A"}}]


def _frames(events: list[dict[str, Any] | None], include_usage: bool = False) -> list[str]:
    frames = render.ChunkStream(TURN, include_usage=include_usage).frames
    return [frame for event in events for frame in frames(event)]


def test_a_call_the_upstream_sent_whole_streams_with_its_arguments():
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "f", "arguments": '{"a":1}',
            "status": "completed"}
    frames = _frames([{"type": "response.created"}, None,
                      {"type": "response.output_item.added", "output_index": 0, "item": call},
                      {"type": "response.output_item.done", "output_index": 0, "item": call},
                      {"type": "response.completed", "response": _response([call])}])
    assert frames[1] == render.KEEP_ALIVE and frames[-1] == render.DONE
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[2:4]]
    for chunk in chunks:
        validate("ChatCompletionChunk", chunk)
    assert chunks[0]["choices"][0]["delta"] == {"tool_calls": [
        {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_cut_short_without_a_chat_reason_ends_in_an_error_and_no_done():
    frames = _frames([{"type": "response.created"},
                      {"type": "response.incomplete", "response": _response([], status="incomplete")}],
                     include_usage=True)
    assert frames[-1].startswith('data: {"error":{"message":"The response was cut short')
    assert render.DONE not in frames and len(frames) == 2


def test_a_call_stored_through_chat_completions_opens_in_the_admin(api, fake_openai):
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    api.client.login(username="admin", password="pw")
    completion = chat(api, store=True, messages=[{"role": "user", "content": "Hello <i>admin</i>"}]).json()
    url = reverse("admin:conversations_app_storedresponse_change", args=[quote(render.response_id(completion["id"]))])
    page = api.client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Hello &lt;i&gt;admin&lt;/i&gt;" in html and "Hello from the fake upstream." in html
