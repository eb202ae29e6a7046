"""GET /v1/responses/{id}?stream=true&starting_after=N: a stored response replayed as the stream a
client would have received, and a running one followed to its end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.store import store
from responses_app import replay
from tests.conftest import sse_events, sse_frames
from tests.contract import validate
from tests.fakes.openai_upstream import Reply

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
         {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]


def _replay(api: Any, response_id: str, **params: Any) -> Any:
    return api.get(f"/v1/responses/{response_id}", stream="true", **params)


def _coalesced(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with each run of deltas of one part joined into one, without sequence numbers: a replay
    sends each part's text (and each call's arguments) as one delta."""
    out: list[dict[str, Any]] = []
    for event in events:
        event = {k: v for k, v in event.items() if k != "sequence_number"}
        last = out[-1] if out else None
        if (last is not None and event["type"].endswith(".delta") and last["type"] == event["type"]
                and last.get("item_id") == event.get("item_id") and last.get("content_index") == event.get(
                    "content_index")):
            last["delta"] += event["delta"]
        else:
            out.append(event)
    return out


def _valid(events: list[dict[str, Any]], first: int = 0) -> None:
    """Validated as live streams are: every event against the SDK and the spec, numbered in order."""
    for event in events:
        validate("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in events] == list(range(first, first + len(events)))


def test_a_replay_is_the_live_stream_event_for_event(api, fake_openai):
    # One chunk per part: the live stream then has exactly the events a replay rebuilds.
    fake_openai.script(Reply(text="Hello there", chunks=["Hello there"]))
    live = sse_events(api.create(model="gpt-test", input="hi", stream=True))
    response = _replay(api, live[0]["response"]["id"])
    assert response.status_code == 200
    assert response["content-type"] == "text/event-stream" and response["cache-control"] == "no-cache"
    replayed = sse_events(response)
    _valid(replayed)
    assert replayed == live


def test_a_replay_of_many_deltas_has_one_per_part(api, fake_openai):
    fake_openai.script(Reply(text="one two three four"))
    live = sse_events(api.create(model="gpt-test", input="hi", stream=True))
    replayed = sse_events(_replay(api, live[0]["response"]["id"]))
    _valid(replayed)
    assert len([e for e in live if e["type"] == "response.output_text.delta"]) == 4
    assert [e["delta"] for e in replayed if e["type"] == "response.output_text.delta"] == ["one two three four"]
    assert _coalesced(replayed) == _coalesced(live)
    assert replayed[-1]["response"] == api.get(f"/v1/responses/{live[0]['response']['id']}").json()


def test_text_then_function_calls_replay_in_order_with_their_ids(api, fake_openai):
    fake_openai.script(Reply(text="Let me check.", tool_calls=[
        {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"id": "call_b", "name": "get_time", "arguments": '{"tz":"CET"}'},
    ]))
    live = sse_events(api.create(model="gpt-test", input="weather and time?", stream=True, tools=TOOLS))
    replayed = sse_events(_replay(api, live[0]["response"]["id"]))
    _valid(replayed)
    assert _coalesced(replayed) == _coalesced(live)
    types = [e["type"] for e in replayed]
    assert types.count("response.function_call_arguments.done") == 2 and types[-1] == "response.completed"
    assert [i["call_id"] for i in replayed[-1]["response"]["output"][1:]] == ["call_a", "call_b"]


def test_a_json_turn_replays_as_if_it_had_been_streamed(api, fake_openai):
    fake_openai.script(Reply(text="whole answer"))
    body = api.create(model="gpt-test", input="hi").json()
    replayed = sse_events(_replay(api, body["id"]))
    _valid(replayed)
    assert [e["type"] for e in replayed] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert replayed[0]["response"]["status"] == "in_progress" and replayed[0]["response"]["output"] == []
    assert replayed[2]["item"]["id"] == body["output"][0]["id"]
    assert replayed[-1]["response"] == body


def test_a_length_cut_replays_its_item_closed_incomplete(api, fake_openai):
    fake_openai.script(Reply(text="cut short", chunks=["cut short"], finish_reason="length"))
    live = sse_events(api.create(model="gpt-test", input="hi", stream=True))
    replayed = sse_events(_replay(api, live[0]["response"]["id"]))
    _valid(replayed)
    assert replayed == live
    assert replayed[-1]["type"] == "response.incomplete"
    assert replayed[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_failed_stream_replays_what_was_said_then_response_failed(api, fake_openai):
    fake_openai.script(Reply(text="a b c d e f", drop_after=3))
    live = sse_events(api.create(model="gpt-test", input="x", stream=True))
    assert live[-1]["type"] == "response.failed"
    replayed = sse_events(_replay(api, live[0]["response"]["id"]))
    _valid(replayed)
    # The abandoned message is announced up to its text, never closed: as live.
    assert _coalesced(replayed) == _coalesced(live)
    assert "response.output_item.done" not in [e["type"] for e in replayed]


def test_starting_after_sends_only_the_later_events(api, fake_openai):
    fake_openai.script(Reply(text="Hello there", chunks=["Hello there"]))
    live = sse_events(api.create(model="gpt-test", input="hi", stream=True))
    response_id = live[0]["response"]["id"]
    for after in (0, 3, len(live) - 2):
        tail = sse_events(_replay(api, response_id, starting_after=str(after)))
        _valid(tail, first=after + 1)
        assert tail == live[after + 1:]
    assert sse_events(_replay(api, response_id, starting_after=str(len(live) + 5))) == []


@pytest.mark.parametrize("value", ["-1", "x", "1.5", "", " 1", "²", "9" * 20])
def test_starting_after_must_be_a_non_negative_integer(api, value):
    body = api.create(model="gpt-test", input="hi").json()
    response = _replay(api, body["id"], starting_after=value)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "starting_after" and error["code"] == "invalid_value"


def test_stream_must_be_true_or_false_and_false_is_the_plain_get(api):
    body = api.create(model="gpt-test", input="hi").json()
    assert api.get(f"/v1/responses/{body['id']}", stream="false").json() == body
    assert api.get(f"/v1/responses/{body['id']}", stream="false", starting_after="x").json() == body
    bad = api.get(f"/v1/responses/{body['id']}", stream="yes")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream"


def test_unknown_deleted_and_unstored_responses_are_404(api):
    assert _replay(api, "resp_nope").status_code == 404
    gone = api.create(model="gpt-test", input="hi").json()
    api.delete(f"/v1/responses/{gone['id']}")
    assert _replay(api, gone["id"]).status_code == 404
    unstored = api.create(model="gpt-test", input="hi", store=False).json()
    assert _replay(api, unstored["id"]).status_code == 404


def _data(frame: bytes) -> dict[str, Any]:
    return json.loads(frame.split(b"data: ", 1)[1])


class _LiveStream:
    """A streamed turn whose client has read `response.created` only: still in_progress."""

    def __init__(self, api: Any) -> None:
        self.response = api.create(model="gpt-test", input="hello", stream=True)
        self.frames = sse_frames(self.response.streaming_content)
        self.id = _data(next(self.frames))["response"]["id"]

    def rest(self) -> list[dict[str, Any]]:
        return [_data(frame) for frame in self.frames if not frame.startswith(b":")]

    def close(self) -> None:
        self.response.close()


def test_a_running_turn_is_followed_to_its_end(api, fake_openai, monkeypatch):
    monkeypatch.setattr(replay, "POLL_FIRST", 0.01)
    fake_openai.script(Reply(text="slow answer", chunks=["slow answer"]))
    stream = _LiveStream(api)
    follower = iter(_replay(api, stream.id).streaming_content)
    opening = [_data(next(follower)) for _ in range(2)]
    assert [e["type"] for e in opening] == ["response.created", "response.in_progress"]
    assert opening[0]["response"]["status"] == "in_progress"
    # The live stream runs to its end (and settles the turn) while the follower waits.
    live = stream.rest()
    rest = [_data(frame) for frame in follower if not frame.startswith(b":")]
    events = opening + rest
    _valid(events)
    assert events[-1]["type"] == "response.completed"
    assert events[2:] == live[1:]  # the live stream's own created/in_progress are its first two frames


def test_a_follower_can_start_after_the_opening_events(api, fake_openai, monkeypatch):
    monkeypatch.setattr(replay, "POLL_FIRST", 0.01)
    fake_openai.script(Reply(text="slow answer", chunks=["slow answer"]))
    stream = _LiveStream(api)
    follower = iter(_replay(api, stream.id, starting_after="1").streaming_content)
    stream.rest()
    events = [_data(frame) for frame in follower if not frame.startswith(b":")]
    _valid(events, first=2)
    assert events[0]["type"] == "response.output_item.added" and events[-1]["type"] == "response.completed"


def test_a_response_deleted_while_followed_ends_with_an_error_event(api, fake_openai, monkeypatch):
    monkeypatch.setattr(replay, "POLL_FIRST", 0.01)
    stream = _LiveStream(api)
    follower = iter(_replay(api, stream.id).streaming_content)
    [next(follower) for _ in range(2)]
    assert store.delete_response(stream.id, "")
    [error] = [_data(frame) for frame in follower]
    validate("ResponseStreamEvent", error)
    assert error["type"] == "error" and error["code"] == "response_not_found" and error["sequence_number"] == 2
    stream.close()


def test_a_turn_that_never_settles_is_given_up_on_with_keep_alives_meanwhile(api, gateway, fake_openai,
                                                                            monkeypatch, settings):
    settings.GATEWAY = gateway.model_copy(update={"server": gateway.server.model_copy(
        update={"turn_timeout": 0.3, "sse_keepalive": 0.05})})
    monkeypatch.setattr(replay, "POLL_FIRST", 0.02)
    monkeypatch.setattr(replay, "POLL_MAX", 0.02)
    monkeypatch.setattr(replay, "FOLLOW_MARGIN", 0.0)
    stream = _LiveStream(api)
    frames = list(_replay(api, stream.id).streaming_content)
    assert any(frame == b": keep-alive\n\n" for frame in frames)
    last = _data(frames[-1])
    assert last["type"] == "error" and last["code"] == "response_still_in_progress"
    stream.close()
