"""A turn answered in Anthropic's shapes: the `Message` and the stream's events, each checked against
the anthropic SDK's own types, and a stream folded by the SDK's accumulator into the same Message
the JSON answer gives."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, TypeVar

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from pydantic import TypeAdapter

from responses_app.assembler import OutputAssembler
from responses_app.providers.base import Finish, Usage
from surfaces_app.anthropic_messages import render, schema, translate
from tests.fakes.openai_upstream import Reply
from tests.surfaces.messages import create, events

pytestmark = pytest.mark.django_db

STREAM_EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)
TOOLS = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


def message(body: dict[str, Any]) -> anthropic.types.Message:
    return anthropic.types.Message.model_validate(body, strict=True)


B = TypeVar("B")


def block(kind: type[B], message: anthropic.types.Message, index: int = 0) -> B:
    """The message's content block `index`, checked to be a `kind`."""
    found = message.content[index]
    assert isinstance(found, kind), message.content
    return found


def folded(stream: list[dict[str, Any]]) -> anthropic.types.Message:
    """The stream's Message as the SDK's `messages.stream(...).get_final_message()` builds it."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in stream:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=STREAM_EVENT.validate_python(event), current_snapshot=snapshot,
                                        json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot


def test_a_text_answer_is_a_message(gateway, fake_openai):
    fake_openai.script(Reply(text="Bonjour !", prompt_tokens=20, cached_tokens=8, completion_tokens=3))
    response = create(model="gpt-test")
    assert response.status_code == 200
    body = response.json()
    parsed = message(body)
    assert body["id"].startswith("msg_") and len(body["id"]) == 4 + 48
    assert parsed.model == "gpt-test" and parsed.role == "assistant" and parsed.type == "message"
    assert [b.model_dump() for b in parsed.content] == [{"type": "text", "text": "Bonjour !", "citations": None}]
    assert parsed.stop_reason == "end_turn" and parsed.stop_sequence is None
    # Cache reads are counted apart from input, as Anthropic counts them.
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 8}
    assert response["request-id"] == response["X-Request-ID"]


def test_a_tool_call_is_a_tool_use_block_with_its_input_parsed(gateway, fake_openai):
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_9", "name": "lookup", "arguments": '{"q": "x"}'}]))
    parsed = message(create(model="gpt-test", tools=TOOLS).json())
    assert parsed.stop_reason == "tool_use"
    assert len(parsed.content) == 1
    call = block(anthropic.types.ToolUseBlock, parsed)
    assert (call.id, call.name, call.input) == ("call_9", "lookup", {"q": "x"})


@pytest.mark.parametrize(("reply", "stop"), [(Reply(finish_reason="length"), "max_tokens"),
                                             (Reply(text="", refusal="I can't."), "refusal"),
                                             (Reply(finish_reason="content_filter"), "refusal")])
def test_stop_reasons(gateway, fake_openai, reply, stop):
    fake_openai.script(reply)
    parsed = message(create(model="gpt-test").json())
    assert parsed.stop_reason == stop
    if reply.refusal:
        assert block(anthropic.types.TextBlock, parsed).text == "I can't."


def test_a_text_stream_has_anthropics_events_and_folds_into_the_json_message(gateway, fake_openai):
    fake_openai.script(Reply(text="One two three", prompt_tokens=9, cached_tokens=2, completion_tokens=3))
    response = create(model="gpt-test", stream=True)
    assert response.status_code == 200 and response["content-type"] == "text/event-stream"
    stream = events(response)
    assert [e["type"] for e in stream] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    for event in stream:
        if event["type"] != "ping":
            STREAM_EVENT.validate_python(event, strict=True)
    start = stream[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    final = folded(stream)
    assert final.id == start["id"]
    assert block(anthropic.types.TextBlock, final).text == "One two three" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (7, 3, 2)


def test_a_tool_call_streams_as_input_json_deltas(gateway, fake_openai):
    fake_openai.script(Reply(text="Checking.", tool_calls=[{"id": "call_1", "name": "lookup",
                                                            "arguments": '{"q": "weather"}'}]))
    stream = events(create(model="gpt-test", tools=TOOLS, stream=True))
    starts = [e["content_block"] for e in stream if e["type"] == "content_block_start"]
    assert starts == [{"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {}}]
    assert any(e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta" for e in stream)
    final = folded(stream)
    assert final.stop_reason == "tool_use"
    assert block(anthropic.types.ToolUseBlock, final, 1).input == {"q": "weather"}


def test_an_upstream_failure_mid_stream_is_an_error_event(gateway, fake_openai):
    fake_openai.script(Reply(text="one two three four", drop_after=2))
    stream = events(create(model="gpt-test", stream=True))
    assert stream[0]["type"] == "message_start"
    assert stream[-1]["type"] == "error"
    assert stream[-1]["error"]["type"] == "api_error"
    assert "message_stop" not in [e["type"] for e in stream]


# --- the renderer alone, on Responses events the chat fake does not produce ---------------------

def _turn(**assembler: Any) -> Any:
    state = OutputAssembler()
    for name, value in assembler.items():
        setattr(state, name, value)
    return SimpleNamespace(response_id="resp_" + "ab" * 24, request=SimpleNamespace(model="m"), assembler=state)


def _render(turn: Any, responses_events: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    frames_of = render.stream_frames(turn)
    frames = [frame for event in responses_events for frame in frames_of(event)]
    return [json.loads(f.split("\ndata: ", 1)[1]) for f in frames]


CREATED = {"type": "response.created", "response": {}}


def test_reasoning_is_a_thinking_block_whose_signature_carries_the_item():
    reasoning = {"id": "rs_7", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Think."}],
                 "encrypted_content": "enc"}
    turn = _turn(finish_reason="stop", usage=Usage(5, 2))
    out = _render(turn, [CREATED, None, {"type": "response.output_item.added", "output_index": 0, "item": reasoning},
                         {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
                         {"type": "response.completed", "response": {"status": "completed", "output": [reasoning]}}])
    assert [e["type"] for e in out] == ["message_start", "ping", "ping", "content_block_start",
                                        "content_block_delta", "content_block_delta", "content_block_stop",
                                        "message_delta", "message_stop"]
    final = folded(out)
    thinking = block(anthropic.types.ThinkingBlock, final)
    assert thinking.thinking == "Think."
    # Given back in a later request, the block is the reasoning item again.
    assert translate.reasoning_item(schema.ThinkingBlock(
        type="thinking", thinking=thinking.thinking, signature=thinking.signature)) == reasoning
    assert render.content_blocks([reasoning]) == [thinking.model_dump()]


def test_a_custom_tool_call_is_a_tool_use_with_its_text_as_input():
    call = {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_c", "name": "patch", "input": "*** diff"}
    turn = _turn(finish_reason="stop")
    out = _render(turn, [CREATED, {"type": "response.output_item.added", "output_index": 0, "item": call},
                         {"type": "response.output_item.done", "output_index": 0, "item": call},
                         {"type": "response.completed", "response": {"status": "completed", "output": [call]}}])
    final = folded(out)
    assert final.stop_reason == "tool_use"
    assert block(anthropic.types.ToolUseBlock, final).input == {"input": "*** diff"}


def test_a_failed_or_cut_turn_ends_with_an_error_event():
    failed = {"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "slow"}}}
    assert _render(_turn(), [CREATED, failed])[-1] == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
    cut = {"type": "response.incomplete", "response": {"status": "incomplete", "incomplete_details": None}}
    assert _render(_turn(), [CREATED, cut])[-1]["error"]["type"] == "overloaded_error"


def test_a_length_cut_is_max_tokens():
    cut = {"type": "response.incomplete", "response": {"status": "incomplete", "output": [],
                                                        "incomplete_details": {"reason": "max_output_tokens"}}}
    out = _render(_turn(finish_reason="length", usage=Usage(3, 16)), [CREATED, cut])
    assert out[-2]["delta"]["stop_reason"] == "max_tokens" and out[-2]["usage"]["output_tokens"] == 16


def test_finish_reasons_map_back_as_the_anthropic_provider_maps_them_in():
    assert render.stop_reason(_turn(finish_reason=Finish("tool_calls").reason), []) == "tool_use"
