"""The Messages and Chat Completions surfaces over an Anthropic upstream (the fake, which refuses what
Anthropic refuses): Messages' thinking budget carried as sent, Claude's thinking blocks answered as
thinking blocks with their own signatures (JSON, and the stream folded by the anthropic SDK's
accumulator) and taken back on the next turn, redacted thinking likewise, and stop sequences ending
a Message with `stop_reason: stop_sequence` and the sequence that matched."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import ApiClient
from tests.fakes.anthropic_upstream import Reply
from tests.providers.harness import Fakes, providers_config
from tests.surfaces.chat import chat
from tests.surfaces.messages import events
from tests.surfaces.test_messages_render import block, folded, message

TOOLS = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture
def api(db: None, settings: Any, fakes: Fakes) -> ApiClient:
    settings.GATEWAY = providers_config(fakes)
    return ApiClient()


def messages(api: ApiClient, **body: Any) -> Any:
    body.setdefault("model", "claude")
    body.setdefault("max_tokens", 4000)
    body.setdefault("messages", [{"role": "user", "content": "Weather in Paris?"}])
    return api.post("/v1/messages", body)


def answer(response: Any, stream: bool) -> anthropic.types.Message:
    assert response.status_code == 200, getattr(response, "content", b"")
    return folded(events(response)) if stream else message(response.json())


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_is_asked_for_answered_and_taken_back(api: ApiClient, fakes: Fakes, stream: bool) -> None:
    fakes.anthropic.script(
        Reply(text="", thinking="Paris means the weather tool.", signature="sig-s1", redacted="opaque-s1",
              tool_calls=[{"id": "toolu_s1", "name": "weather", "input": {"city": "Paris"}}]),
        Reply(text="Sunny, ", quote_tool_result=True))
    first = answer(messages(api, tools=TOOLS, thinking={"type": "enabled", "budget_tokens": 2048},
                            temperature=0.3, stream=stream), stream)
    sent = fakes.anthropic.last.json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}  # the budget as sent ...
    assert sent["max_tokens"] == 4000 and "temperature" not in sent  # ... and what Anthropic refuses, left out
    thinking = block(anthropic.types.ThinkingBlock, first)
    assert (thinking.thinking, thinking.signature) == ("Paris means the weather tool.", "sig-s1")
    assert block(anthropic.types.RedactedThinkingBlock, first, 1).data == "opaque-s1"
    call = block(anthropic.types.ToolUseBlock, first, 2)
    assert first.stop_reason == "tool_use"
    # The client sends the turn back as it got it, with the tool's result: Anthropic gets its blocks again.
    second = answer(messages(api, tools=TOOLS, thinking={"type": "enabled", "budget_tokens": 2048}, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]},
    ]), False)
    assert block(anthropic.types.TextBlock, second).text == "Sunny, 22C"
    assert fakes.anthropic.last.json["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Paris means the weather tool.", "signature": "sig-s1"},
        {"type": "redacted_thinking", "data": "opaque-s1"},
        {"type": "tool_use", "id": "toolu_s1", "name": "weather", "input": {"city": "Paris"}},
    ]


def test_thinking_blocks_of_claude_are_left_out_for_other_upstreams(api: ApiClient, fakes: Fakes) -> None:
    response = messages(api, model="chat-model", messages=[
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "sig-x"},
                                          {"type": "redacted_thinking", "data": "d"},
                                          {"type": "text", "text": "A"}]},
        {"role": "user", "content": "Again"}])
    assert response.status_code == 200, response.content
    assert fakes.chat.last.json["messages"] == [{"role": "user", "content": "Q"},
                                                {"role": "assistant", "content": "A"},
                                                {"role": "user", "content": "Again"}]


def test_a_message_of_thinking_blocks_alone_is_still_refused(api: ApiClient, fakes: Fakes) -> None:
    response = messages(api, messages=[{"role": "user", "content": [
        {"type": "thinking", "thinking": "t", "signature": "sig-x"}]}])
    assert response.status_code == 400
    assert fakes.anthropic.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_is_the_messages_stop_reason(api: ApiClient, fakes: Fakes, stream: bool) -> None:
    fakes.anthropic.script(Reply(text="one two STOP three"))
    answered = answer(messages(api, stop_sequences=["HALT", "STOP"], stream=stream), stream)
    assert fakes.anthropic.last.json["stop_sequences"] == ["HALT", "STOP"]
    assert block(anthropic.types.TextBlock, answered).text == "one two "
    assert (answered.stop_reason, answered.stop_sequence) == ("stop_sequence", "STOP")


def test_without_a_match_the_stop_sequence_is_null(api: ApiClient, fakes: Fakes) -> None:
    answered = answer(messages(api, stop_sequences=["NEVER"]), False)
    assert (answered.stop_reason, answered.stop_sequence) == ("end_turn", None)


def test_chat_stop_and_reasoning_effort_on_claude(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Reply(text="Done. END more", thinking="Short.", signature="sig-c1"))
    response = chat(api, model="claude", stop="END", reasoning_effort="medium", temperature=0.5)
    assert response.status_code == 200, response.content
    sent = fakes.anthropic.last.json
    assert sent["stop_sequences"] == ["END"] and sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in sent
    choice = response.json()["choices"][0]
    # Chat has no form for the thinking; the text is cut at the sequence; the finish is plain `stop`.
    assert choice["message"]["content"] == "Done. " and choice["finish_reason"] == "stop"
