"""Stop sequences and extended thinking on the wire: what each upstream type is sent for a Chat or
Messages client's stop sequences, and what an Anthropic upstream is sent for a reasoning effort
(the budget, max_tokens, the sampling settings and tool choices Anthropic refuses with thinking on),
how its thinking blocks come back as reasoning items and go back up as thinking blocks. The fake
Anthropic refuses what Anthropic refuses, so every 200 here is one Anthropic would have answered."""

from __future__ import annotations

from typing import Any

import pytest

from responses_app.providers import anthropic, openai_responses
from responses_app.providers.base import ProviderRequest
from tests.conftest import ApiClient
from tests.fakes.anthropic_upstream import Reply
from tests.providers.harness import Fakes, final_response, output_text
from tests.surfaces.chat import chunks, streamed_text

STOPS = ["END", "\n\n"]


def chat(api: ApiClient, model: str, **body: Any) -> Any:
    body.setdefault("messages", [{"role": "user", "content": "Count."}])
    return api.post("/v1/chat/completions", {"model": model, **body})


# --- stop sequences ----------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "sent"), [
    ("chat-model", lambda body: body["stop"]),
    ("azure-model", lambda body: body["stop"]),
    ("claude", lambda body: body["stop_sequences"]),
    ("gemini", lambda body: body["generationConfig"]["stopSequences"]),
])
def test_stop_sequences_reach_each_upstream_in_its_own_form(api: ApiClient, fakes: Fakes, model: str,
                                                           sent: Any) -> None:
    response = chat(api, model, stop=STOPS)
    assert response.status_code == 200, response.content
    fake = {"chat-model": fakes.chat, "azure-model": fakes.azure, "claude": fakes.anthropic,
            "gemini": fakes.gemini}[model]
    assert sent(fake.last.json) == STOPS


def test_a_stop_string_is_one_sequence_and_the_responses_api_has_none(api: ApiClient, fakes: Fakes,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    assert chat(api, "chat-model", stop="END").status_code == 200
    assert fakes.chat.last.json["stop"] == ["END"]
    caplog.set_level("DEBUG", logger="responses_app.providers.openai_responses")
    assert chat(api, "responses-model", stop="END").status_code == 200
    assert "stop" not in fakes.responses.last.json and "stop_sequences" not in fakes.responses.last.json
    assert "stop sequences left out: the Responses API has no such parameter" in caplog.messages


def test_responses_clients_send_no_stop_sequences(api: ApiClient, fakes: Fakes) -> None:
    """`stop` is no Responses parameter: sent to /v1/responses it is passed on (a Responses-native
    upstream's concern), never turned into stop sequences for a translating upstream."""
    assert api.create(model="claude", input="hi", stop=["END"]).status_code == 200
    assert "stop_sequences" not in fakes.anthropic.last.json
    assert api.create(model="chat-model", input="hi", stop=["END"]).status_code == 200
    assert "stop" not in fakes.chat.last.json


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_stop_sequence_ends_the_answer_as_stop(api: ApiClient, fakes: Fakes, stream: bool) -> None:
    fakes.anthropic.script(Reply(text="one two END three"))
    response = chat(api, "claude", stop=["END"], stream=stream)
    assert response.status_code == 200
    if stream:
        found, _ = chunks(response)
        text = streamed_text(found)
        finish = [c for c in found if c["choices"]][-1]["choices"][0]["finish_reason"]
    else:
        text = response.json()["choices"][0]["message"]["content"]
        finish = response.json()["choices"][0]["finish_reason"]
    assert text == "one two " and finish == "stop"


# --- thinking: what Anthropic is sent ----------------------------------------------------------

@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384),
                                                ("xhigh", 32768)])
def test_an_explicit_effort_is_a_thinking_budget_with_room_for_the_answer(api: ApiClient, fakes: Fakes,
                                                                          effort: str, budget: int) -> None:
    assert api.create(model="claude", input="hi", reasoning={"effort": effort}).status_code == 200
    body = fakes.anthropic.last.json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == 4096 + budget  # the default room for the answer, on top


@pytest.mark.parametrize("reasoning", [{"effort": "minimal"}, {"effort": "none"}, {"summary": "auto"}, None])
def test_no_thinking_without_an_effort_that_asks_for_it(api: ApiClient, fakes: Fakes, reasoning: Any) -> None:
    """Codex sends `reasoning: {summary: auto}` with no effort: that switches nothing on."""
    body: dict[str, Any] = {"model": "claude", "input": "hi"}
    if reasoning is not None:
        body["reasoning"] = reasoning
    assert api.create(**body).status_code == 200
    assert "thinking" not in fakes.anthropic.last.json and fakes.anthropic.last.json["max_tokens"] == 4096


@pytest.mark.parametrize(("max_output_tokens", "thinking"), [
    (20000, {"type": "enabled", "budget_tokens": 16384}),  # fits: as the effort says
    (8000, {"type": "enabled", "budget_tokens": 4000}),  # does not fit: half the limit
    (1500, None),  # half the limit is below Anthropic's 1024: no thinking
])
def test_a_client_limit_bounds_thinking_and_answer_together(api: ApiClient, fakes: Fakes, max_output_tokens: int,
                                                            thinking: Any) -> None:
    response = api.create(model="claude", input="hi", reasoning={"effort": "high"},
                          max_output_tokens=max_output_tokens)
    assert response.status_code == 200, response.content
    body = fakes.anthropic.last.json
    assert body["max_tokens"] == max_output_tokens and body.get("thinking") == thinking


def test_sampling_settings_anthropic_refuses_with_thinking_are_left_out(api: ApiClient, fakes: Fakes) -> None:
    assert api.create(model="claude", input="hi", reasoning={"effort": "low"}, temperature=0.2,
                      top_p=0.5).status_code == 200
    body = fakes.anthropic.last.json
    assert "thinking" in body and "temperature" not in body and "top_p" not in body
    assert api.create(model="claude", input="hi", reasoning={"effort": "low"}, temperature=1,
                      top_p=0.97).status_code == 200
    body = fakes.anthropic.last.json
    assert body["temperature"] == 1 and body["top_p"] == 0.97
    # Without thinking they go as sent.
    api.create(model="claude", input="hi", temperature=0.2, top_p=0.5)
    assert fakes.anthropic.last.json["temperature"] == 0.2 and fakes.anthropic.last.json["top_p"] == 0.5


WEATHER = {"type": "function", "name": "weather", "description": "The weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.parametrize("extra", [
    {"tools": [WEATHER], "tool_choice": "required"},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "weather"}},
    {"text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}}},
])
def test_a_forced_tool_call_keeps_thinking_off(api: ApiClient, fakes: Fakes, extra: dict[str, Any]) -> None:
    """Anthropic refuses thinking with tool_choice any/tool (structured output is a forced tool)."""
    response = api.create(model="claude", input="hi", reasoning={"effort": "high"}, **extra)
    assert response.status_code == 200, response.content
    body = fakes.anthropic.last.json
    assert body["tool_choice"]["type"] in ("any", "tool") and "thinking" not in body
    assert body["max_tokens"] == 4096


# --- thinking: what comes back, and goes back up -----------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_thinking_blocks_are_reasoning_items_that_go_back_as_they_came(api: ApiClient, fakes: Fakes,
                                                                       stream: bool) -> None:
    fakes.anthropic.script(Reply(text="", thinking="The user wants Paris.", signature="sig-t1", redacted="opaque-1",
                                 tool_calls=[{"id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]),
                           Reply(text="Sunny.", quote_tool_result=True))
    first = final_response(api.create(model="claude", input="Weather in Paris?", reasoning={"effort": "low"},
                                      tools=[WEATHER], stream=stream), stream)
    reasoning = [item for item in first["output"] if item["type"] == "reasoning"]
    assert [(r["summary"], r["encrypted_content"]) for r in reasoning] == [
        ([{"type": "summary_text", "text": "The user wants Paris."}], "anthropic-thinking-signature:sig-t1"),
        ([], "anthropic-redacted-thinking:opaque-1"),
    ]
    assert [item["type"] for item in first["output"]] == ["reasoning", "reasoning", "function_call"]
    [call] = [item for item in first["output"] if item["type"] == "function_call"]
    second = api.create(model="claude", previous_response_id=first["id"], reasoning={"effort": "low"},
                        tools=[WEATHER], input=[{"type": "function_call_output", "call_id": call["call_id"],
                                                 "output": "22C"}])
    # The fake checks the signature and that the tool call's turn starts with its thinking block.
    assert second.status_code == 200, second.content
    assert output_text(second.json()) == "Sunny.22C"
    assistant = fakes.anthropic.last.json["messages"][1]
    assert assistant == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "The user wants Paris.", "signature": "sig-t1"},
        {"type": "redacted_thinking", "data": "opaque-1"},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ]}
    assert fakes.anthropic.last.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_a_tool_call_replayed_without_its_thinking_turns_thinking_off(api: ApiClient, fakes: Fakes) -> None:
    """A client that cannot keep reasoning items (Chat Completions has no form for them) replays the
    call alone; Anthropic would refuse that with thinking on, so that request goes without."""
    response = api.create(model="claude", reasoning={"effort": "low"}, tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "toolu_1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "22C"},
    ])
    assert response.status_code == 200, response.content
    assert "thinking" not in fakes.anthropic.last.json


def test_thinking_blocks_go_up_only_while_thinking_is_on(api: ApiClient, fakes: Fakes) -> None:
    fakes.anthropic.script(Reply(text="42.", thinking="Add.", signature="sig-t2"))
    first = api.create(model="claude", input="40 + 2?", reasoning={"effort": "low"}).json()
    api.create(model="claude", previous_response_id=first["id"], input="Sure?")
    assert [b["type"] for m in fakes.anthropic.last.json["messages"] for b in m["content"]] == ["text", "text", "text"]


def test_other_providers_never_see_an_anthropic_reasoning_item() -> None:
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
             anthropic.thinking_item({"type": "thinking", "thinking": "t", "signature": "s"}),
             anthropic.thinking_item({"type": "redacted_thinking", "data": "d"}),
             {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-openai"}]
    sent = openai_responses.build_payload(ProviderRequest(model="m", items=items), stream=False)["input"]
    assert [item["type"] for item in sent] == ["message", "reasoning"]
    assert sent[1]["encrypted_content"] == "gAAAA-openai"
    # And Anthropic never gets another provider's reasoning item.
    items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]})
    payload = anthropic.build_payload(ProviderRequest(model="m", items=items, reasoning_budget=2048), stream=False)
    assert payload["messages"][1]["content"] == [{"type": "thinking", "thinking": "t", "signature": "s"},
                                                 {"type": "redacted_thinking", "data": "d"}]
    assert payload["thinking"] == {"type": "enabled", "budget_tokens": 2048}
