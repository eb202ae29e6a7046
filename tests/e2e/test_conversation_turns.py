"""Turns in a conversation of the Conversations API under real gunicorn, with the openai SDK in
strict mode: 50 concurrent turns on one conversation all land exactly once, each turn's input and
output together, in commit order; and a conversation continued over the WebSocket mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from openai import OpenAI

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.e2e.test_websocket import Events, _text
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.default_step = Reply(text="noted", chunk_delay=0.01)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:
    config = f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", retry: {{max_retries: 0}}}}
models: [{{name: m, provider: openai}}]
"""
    with GatewayProcess(config, workers=2) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess, upstream: FakeOpenAI) -> OpenAI:
    upstream.reset()
    return OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


def _wire(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def test_fifty_concurrent_turns_on_one_conversation_all_land_exactly_once(client: OpenAI):
    conversation = client.conversations.create()

    finals: dict[int, Any] = {}

    def turn(n: int) -> str:
        final: Any
        if n % 2:
            with client.responses.create(model="m", input=f"fact {n}", conversation=conversation.id,
                                         stream=True) as events:
                last: Any = [event for event in events][-1]
                final = last.response
        else:
            final = client.responses.create(model="m", input=f"fact {n}", conversation={"id": conversation.id})
        finals[n] = final
        assert final.conversation is not None and final.conversation.id == conversation.id
        return final.id

    with ThreadPoolExecutor(max_workers=25) as pool:
        response_ids = list(pool.map(turn, range(50)))
    for final in (finals[0], finals[1]):  # one answered as JSON, one streamed (validating all 50 is slow)
        validate("Response", _wire(final))
    items: list[Any] = list(client.conversations.items.list(conversation.id, order="asc", limit=100))
    assert len(items) == 100
    users = [item.content[0].text for item in items if item.type == "message" and item.role == "user"]
    assert sorted(users, key=lambda text: int(text.split()[1])) == [f"fact {n}" for n in range(50)]
    # Each turn's input and output sit together: the appends were serialised, never interleaved.
    for user, answer in zip(items[::2], items[1::2], strict=True):
        assert (user.role, answer.role) == ("user", "assistant")
    assert len(set(response_ids)) == 50


def test_a_conversation_continued_over_the_websocket(client: OpenAI, upstream: FakeOpenAI):
    seed: Any = [{"type": "message", "role": "user", "content": "My name is Ada."}]
    conversation = client.conversations.create(items=seed)
    upstream.script(Reply(text="Hello Ada."), Reply(text="You are Ada."))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="Hi!", conversation=conversation.id)
        first = events.until_terminal()
        connection.response.create(model="m", input="Who am I?", conversation=conversation.id)
        second = events.until_terminal()
        # Steering is not offered for responses bound to a conversation.
        connection.response.create(model="m", input="Again?", conversation=conversation.id)
        created = events.next()
        connection.response.steer(previous_response_id=created["response"]["id"], input="faster")
        rest = events.until_terminal()
    assert (_text(first), _text(second)) == ("Hello Ada.", "You are Ada.")
    assert second[-1]["response"]["conversation"] == {"id": conversation.id}
    received = json.dumps(upstream.requests[1].json)
    assert all(text in received for text in ("My name is Ada.", "Hi!", "Hello Ada.", "Who am I?"))
    refused = next(e for e in rest if e["type"] == "response.steer.failed")
    assert refused["error"]["code"] == "steering_not_supported"
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert len(items) == 7


def test_a_five_turn_chat_and_a_tool_round_trip_through_conversation(client: OpenAI, upstream: FakeOpenAI):
    conversation = client.conversations.create(metadata={"topic": "weather"})
    for turn in range(5):
        upstream.script(Reply(text=f"answer {turn}"))
        response = client.responses.create(model="m", input=f"question {turn}", conversation=conversation.id)
        assert response.output_text == f"answer {turn}"
        sent = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
                for m in upstream.last.json["messages"]]
        earlier = [pair for n in range(turn) for pair in (("user", f"question {n}"), ("assistant", f"answer {n}"))]
        assert sent == [*earlier, ("user", f"question {turn}")]
    validate("Response", _wire(response))
    tools: list[Any] = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}]
    upstream.script(Reply(text="", tool_calls=[{"id": "call_1", "name": "weather", "arguments": "{}"}]),
                    Reply(text="Sunny."))
    call = client.responses.create(model="m", input="And the weather?", conversation=conversation.id, tools=tools)
    assert call.output[0].type == "function_call"
    answer = client.responses.create(model="m", conversation=conversation.id, tools=tools,
                                     input=[{"type": "function_call_output", "call_id": "call_1", "output": "sun"}])
    assert answer.output_text == "Sunny."
    messages = upstream.last.json["messages"]
    assert [m["role"] for m in messages[-3:]] == ["user", "assistant", "tool"] and len(messages) == 13
    items: list[Any] = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [item.type for item in items[-4:]] == ["message", "function_call", "function_call_output", "message"]
    assert len(items) == 14
