"""One gateway wired to a fake upstream of every wire format, and per-format knowledge of how to
script it and what to look for in what it received, so each behaviour is tested once for all."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway_project.config import GatewayConfig, parse_config
from tests.conftest import sse_events
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import FakeAzureOpenAI
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_responses_upstream import FakeOpenAIResponses
from tests.fakes.server import FakeServer


@dataclass
class Fakes:
    chat: chat.FakeOpenAI
    responses: FakeOpenAIResponses
    azure: FakeAzureOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def all(self) -> list[FakeServer]:
        return [self.chat, self.responses, self.azure, self.anthropic, self.gemini]


@pytest.fixture(scope="session")
def _fake_servers() -> Iterator[Fakes]:
    fakes = Fakes(chat.FakeOpenAI(), FakeOpenAIResponses(), FakeAzureOpenAI(), FakeAnthropic(), FakeGemini())
    yield fakes
    for fake in fakes.all():
        fake.close()


@pytest.fixture
def fakes(_fake_servers: Fakes) -> Iterator[Fakes]:
    for fake in _fake_servers.all():
        fake.reset()
    yield _fake_servers
    for fake in _fake_servers.all():
        fake.reset()


def providers_config(fakes: Fakes, *, provider_overrides: dict[str, dict[str, Any]] | None = None,
                     models: list[dict[str, Any]] | None = None) -> GatewayConfig:
    """Every provider type on its fake, one model each. No retries unless a test asks for them."""
    quick = {"connect_timeout": 2, "read_timeout": 5, "retry": {"max_retries": 0}}
    providers: dict[str, dict[str, Any]] = {
        "openai": {"type": "openai", "api_key": "sk-chat", "endpoint": f"{fakes.chat.url}/v1", **quick},
        "openai-responses": {"type": "openai", "api": "responses", "api_key": "sk-resp",
                             "endpoint": f"{fakes.responses.url}/v1", **quick},
        "azure": {"type": "azureopenai", "api_key": "az-key", "endpoint": fakes.azure.url, **quick},
        "anthropic": {"type": "anthropic", "api_key": "sk-ant", "endpoint": fakes.anthropic.url, **quick},
        "google": {"type": "google", "api_key": "goog-key", "endpoint": f"{fakes.gemini.url}/v1beta", **quick},
    }
    for key, override in (provider_overrides or {}).items():
        providers.setdefault(key, {}).update(override)
    return parse_config({
        "logging": {"format": "text", "level": "warn"},
        "providers": providers,
        "models": models or [
            {"name": "chat-model", "provider": "openai", "provider_model_id": "gpt-upstream"},
            {"name": "responses-model", "provider": "openai-responses", "provider_model_id": "gpt-responses-upstream"},
            {"name": "azure-model", "provider": "azure", "provider_model_id": "my-deployment"},
            {"name": "claude", "provider": "anthropic", "provider_model_id": "claude-upstream"},
            {"name": "gemini", "provider": "google", "provider_model_id": "gemini-upstream"},
        ],
    })


def final_response(response: Any, stream: bool) -> dict[str, Any]:
    """The Response object: the JSON body, or the `response` of the stream's terminal event."""
    assert response.status_code == 200, getattr(response, "content", b"")
    if not stream:
        return response.json()
    events = sse_events(response)
    terminal = events[-1]
    assert terminal["type"] in ("response.completed", "response.incomplete", "response.failed"), terminal
    return terminal["response"]


def output_text(body: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for item in body["output"] if item["type"] == "message"
                   for p in item["content"] if p["type"] == "output_text")


@dataclass
class Kind:
    """How one wire format is scripted and inspected."""

    model: str
    fake: Callable[[Fakes], FakeServer]
    upstream_model: Callable[[Any], str]
    text: Callable[[str], Any]
    tool_call: Callable[[str, str, dict[str, Any]], Any]  # (call id, name, args)
    length_cut: Any
    usage: dict[str, int]  # what the default text reply's usage must become
    sent_tool_round_trip: Callable[[Any, str, str, str], None]  # (recorded json, call_id, name, output)
    user_text: Callable[[Any], str]


def _chat_round_trip(body: Any, call_id: str, name: str, output: str) -> None:
    messages = body["messages"]
    call_turn = next(m for m in messages if m.get("tool_calls"))
    assert call_turn["tool_calls"][0]["id"] == call_id and call_turn["tool_calls"][0]["function"]["name"] == name
    assert {"role": "tool", "tool_call_id": call_id, "content": output} in messages


def _responses_round_trip(body: Any, call_id: str, name: str, output: str) -> None:
    assert body["store"] is False and "previous_response_id" not in body
    kinds = [item.get("type", "message") for item in body["input"]]
    assert kinds == ["message", "function_call", "function_call_output"], kinds
    call, result = body["input"][1], body["input"][2]
    assert (call["call_id"], call["name"]) == (call_id, name) and "id" not in call
    assert result == {"type": "function_call_output", "call_id": call_id, "output": output}


def _anthropic_round_trip(body: Any, call_id: str, name: str, output: str) -> None:
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"], roles
    tool_use = body["messages"][1]["content"][-1]
    assert tool_use == {"type": "tool_use", "id": call_id, "name": name, "input": {"city": "Paris"}}
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": output}]


def _gemini_round_trip(body: Any, call_id: str, name: str, output: str) -> None:
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user"], roles
    assert body["contents"][1]["parts"][-1] == {"functionCall": {"name": name, "args": {"city": "Paris"}}}
    # Gemini pairs by name: the gateway found it from the replayed call with this call_id.
    assert body["contents"][2]["parts"] == [{"functionResponse": {"name": name, "response": {"output": output}}}]


def _chat_user_text(body: Any) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


KINDS: dict[str, Kind] = {
    "openai-chat": Kind(
        model="chat-model", fake=lambda f: f.chat, upstream_model=lambda r: r.json["model"],
        text=lambda t: chat.Reply(text=t, prompt_tokens=11, completion_tokens=7, cached_tokens=3, reasoning_tokens=2),
        tool_call=lambda cid, n, a: chat.Reply(text="",
                                               tool_calls=[{"id": cid, "name": n, "arguments": json.dumps(a)}]),
        length_cut=chat.Reply(text="cut short", finish_reason="length"),
        usage={"input_tokens": 11, "output_tokens": 7, "cached_tokens": 3, "reasoning_tokens": 2},
        sent_tool_round_trip=_chat_round_trip, user_text=_chat_user_text,
    ),
    "azure": Kind(
        model="azure-model", fake=lambda f: f.azure,
        upstream_model=lambda r: r.path.split("/")[3],
        text=lambda t: chat.Reply(text=t, prompt_tokens=11, completion_tokens=7, cached_tokens=3, reasoning_tokens=2),
        tool_call=lambda cid, n, a: chat.Reply(text="",
                                               tool_calls=[{"id": cid, "name": n, "arguments": json.dumps(a)}]),
        length_cut=chat.Reply(text="cut short", finish_reason="length"),
        usage={"input_tokens": 11, "output_tokens": 7, "cached_tokens": 3, "reasoning_tokens": 2},
        sent_tool_round_trip=_chat_round_trip, user_text=_chat_user_text,
    ),
    "openai-responses": Kind(
        model="responses-model", fake=lambda f: f.responses, upstream_model=lambda r: r.json["model"],
        text=lambda t: resp.Reply(text=t, input_tokens=11, output_tokens=7, cached_tokens=3, reasoning_tokens=2),
        tool_call=lambda cid, n, a: resp.Reply(text="",
                                               tool_calls=[{"call_id": cid, "name": n, "arguments": json.dumps(a)}]),
        length_cut=resp.Reply(text="cut short", incomplete_reason="max_output_tokens"),
        usage={"input_tokens": 11, "output_tokens": 7, "cached_tokens": 3, "reasoning_tokens": 2},
        sent_tool_round_trip=_responses_round_trip,
        user_text=lambda body: body["input"][0]["content"][0]["text"],
    ),
    "anthropic": Kind(
        model="claude", fake=lambda f: f.anthropic, upstream_model=lambda r: r.json["model"],
        text=lambda t: anth.Reply(text=t, input_tokens=5, cache_read=3, cache_creation=3, output_tokens=7),
        tool_call=lambda cid, n, a: anth.Reply(text="", tool_calls=[{"id": cid, "name": n, "input": a}]),
        length_cut=anth.Reply(text="cut short", stop_reason="max_tokens"),
        # input = input + cache read + cache creation; cached = cache read.
        usage={"input_tokens": 11, "output_tokens": 7, "cached_tokens": 3, "cache_write_tokens": 3},
        sent_tool_round_trip=_anthropic_round_trip,
        user_text=lambda body: body["messages"][0]["content"][0]["text"],
    ),
    "google": Kind(
        model="gemini", fake=lambda f: f.gemini, upstream_model=lambda r: r.path.split("/")[3].split(":")[0],
        text=lambda t: gem.Reply(text=t, prompt_tokens=11, candidates_tokens=5, thoughts_tokens=2, cached_tokens=3),
        tool_call=lambda cid, n, a: gem.Reply(text="", function_calls=[{"name": n, "args": a}]),
        length_cut=gem.Reply(text="cut short", finish_reason="MAX_TOKENS"),
        # thoughts are reasoning and count as output.
        usage={"input_tokens": 11, "output_tokens": 7, "cached_tokens": 3, "reasoning_tokens": 2},
        sent_tool_round_trip=_gemini_round_trip,
        user_text=lambda body: body["contents"][0]["parts"][0]["text"],
    ),
}

UPSTREAM_MODEL = {"chat-model": "gpt-upstream", "responses-model": "gpt-responses-upstream",
                  "azure-model": "my-deployment", "claude": "claude-upstream", "gemini": "gemini-upstream"}


def expected_usage(usage: dict[str, int]) -> dict[str, Any]:
    """The Responses usage object for a provider-neutral usage dict."""
    return {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0),
                                 "cache_write_tokens": usage.get("cache_write_tokens", 0)},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }
