"""The WebSocket mode on every provider type (Chat Completions, the upstream's own Responses API,
Anthropic, Gemini) under real gunicorn, with the SDK's `client.responses.connect()`: a `store:
false` conversation continued from the connection's memory, steering with the successor started by
the gateway, and a compacted context started over the socket. Every event is validated strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI

from tests.e2e.gunicorn import GatewayProcess
from tests.e2e.test_websocket import Events, _text
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(provider_gateway: GatewayProcess, provider_fakes: dict[str, FakeServer]) -> OpenAI:
    for fake in provider_fakes.values():
        fake.reset()
    return OpenAI(base_url=provider_gateway.base_url, api_key="sk-client", max_retries=0,
                  _strict_response_validation=True)


def _text_then_call(kind: str, text: str) -> Any:
    """A reply that says `text` slowly, then calls a tool: the call is the next output boundary."""
    if kind == "chat":
        return chat.Reply(text=text, tool_calls=[{"id": "call_1", "name": "lookup", "arguments": "{}"}],
                          chunk_delay=0.3)
    if kind == "responses":
        return resp.Reply(text=text, tool_calls=[{"call_id": "call_1", "name": "lookup", "arguments": "{}"}],
                          chunk_delay=0.3)
    if kind == "anthropic":
        return anth.Reply(text=text, tool_calls=[{"id": "toolu_1", "name": "lookup", "input": {}}], chunk_delay=0.3)
    return gem.Reply(text=text, function_calls=[{"name": "lookup", "args": {}}], chunk_delay=0.3)


REPLY = {"chat": chat.Reply, "responses": resp.Reply, "anthropic": anth.Reply, "google": gem.Reply}
MODEL = {"chat": "chat-model", "responses": "responses-model", "anthropic": "claude", "google": "gemini"}
TOOLS: list[Any] = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize("kind", list(MODEL))
def test_a_store_false_conversation_over_one_socket(client, provider_fakes, kind):
    fake = provider_fakes[kind]
    fake.script(REPLY[kind](text="Paris."), REPLY[kind](text="In May."))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model=MODEL[kind], input="Where to?", store=False)
        first = events.until_terminal()
        connection.response.create(model=MODEL[kind], input="When?", store=False,
                                   previous_response_id=first[-1]["response"]["id"])
        second = events.until_terminal()
    assert (_text(first), _text(second)) == ("Paris.", "In May.")
    received = json.dumps(fake.last.json)  # the whole context, though the client sent only "When?"
    assert all(text in received for text in ("Where to?", "Paris.", "When?"))


@pytest.mark.parametrize("kind", list(MODEL))
def test_steering_on_every_provider_type(client, provider_fakes, kind):
    fake = provider_fakes[kind]
    fake.script(_text_then_call(kind, "Let me check that."), REPLY[kind](text="Done differently."))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model=MODEL[kind], input="Do it.", tools=TOOLS)
        first = events.next()["response"]["id"]
        while events.next()["type"] != "response.output_text.delta":
            pass
        connection.response.steer(previous_response_id=first, input="Change of plan.")
        seen = events.until_terminal(2)
    kinds = [e["type"] for e in seen]
    assert "response.steer.accepted" in kinds
    steered = seen[kinds.index("response.incomplete")]["response"]
    assert steered["incomplete_details"] == {"reason": "steered"}
    assert [item["type"] for item in steered["output"]] == ["message"]
    successor = seen[kinds.index("response.incomplete") + 1]["response"]
    assert successor["previous_response_id"] == first and successor["model"] == MODEL[kind]
    assert seen[-1]["type"] == "response.completed"
    assert _text(seen[kinds.index("response.incomplete") + 1:]) == "Done differently."
    if kind != "google":  # Gemini sends the call whole in its last frame: that answer had ended
        assert fake.requests[0].client_disconnected.wait(2)  # the steered call was closed
    assert "Change of plan." in json.dumps(fake.last.json)


def test_a_compacted_context_starts_a_new_chain_over_the_socket(client, provider_fakes):
    fake = provider_fakes["anthropic"]
    fake.script(anth.Reply(text="The user plans a trip to Paris in May."), anth.Reply(text="Pack light."))
    history: list[Any] = [{"role": "user", "content": "Plan a trip to Paris."},
                          {"role": "assistant", "content": "When do you go?"},
                          {"role": "user", "content": "In May."}]
    raw = client.responses.with_raw_response.compact(model="claude", input=history)
    output = json.loads(raw.text)["output"]
    assert output[-1]["type"] == "compaction"
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="claude", input=[*output, {"role": "user", "content": "Pack?"}])
        answer = events.until_terminal()
    assert _text(answer) == "Pack light."
    received = json.dumps(fake.last.json)
    assert "The user plans a trip to Paris in May." in received and "When do you go?" not in received


def test_automatic_compaction_at_a_threshold_over_the_socket(client, provider_fakes):
    fake = provider_fakes["google"]
    summary = "The user shared a long document and asked what to do next."
    fake.script(gem.Reply(text=summary), gem.Reply(text="Next, summarise it."))
    big = " ".join(f"paragraph {n} of a long document" for n in range(600))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="gemini", input=[{"role": "user", "content": "Read this."},
                                                          {"role": "assistant", "content": big},
                                                          {"role": "user", "content": "Now what?"}],
                                   context_management=[{"type": "compaction", "compact_threshold": 1000}])
        seen = events.until_terminal()
    assert [e["type"] for e in seen[2:5]] == ["response.output_item.added", "response.compaction.compacting",
                                              "response.output_item.done"]
    final = seen[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["compaction", "message"]
    assert _text(seen) == "Next, summarise it." and big[:100] not in json.dumps(fake.last.json)
