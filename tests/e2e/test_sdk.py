"""The official `openai` SDK, in strict validation mode, against the gateway under real gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.openai_upstream import Fail, FakeOpenAI, Reply

pytestmark = pytest.mark.e2e


def config_yaml(openai_url: str) -> str:
    return f"""
logging: {{format: text, level: warn}}
providers:
  # No gateway retries: a scripted upstream failure must reach the SDK as is.
  openai: {{type: openai, api_key: sk-upstream, endpoint: "{openai_url}/v1", read_timeout: 10,
            retry: {{max_retries: 0}}}}
models:
  - {{name: gpt-test, provider: openai, provider_model_id: gpt-4o-mini}}
"""


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(config_yaml(upstream.url)) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess, upstream: FakeOpenAI) -> OpenAI:
    upstream.reset()
    return OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


def _wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def test_create(client, upstream):
    upstream.script(Reply(text="Hello from upstream", prompt_tokens=5, completion_tokens=3))
    response = client.responses.create(model="gpt-test", input="Hi")
    validate("Response", _wire(response))
    assert response.output_text == "Hello from upstream"
    assert response.status == "completed"
    assert response.usage.total_tokens == 8
    assert response._request_id


def test_create_stream(client, upstream):
    upstream.script(Reply(text="one two three"))
    stream = client.responses.create(model="gpt-test", input="count", stream=True)
    events = list(stream)
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for event in events:
        validate("ResponseStreamEvent", _wire(event))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert events[-1].response.output_text == "one two three"


def test_stream_helper_and_final_response(client, upstream):
    upstream.script(Reply(text="streamed answer"))
    with client.responses.stream(model="gpt-test", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "streamed answer"
    assert final.output_text == "streamed answer"
    assert client.responses.retrieve(final.id).output_text == "streamed answer"


def test_retrieve_and_delete(client):
    created = client.responses.create(model="gpt-test", input="keep me")
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    assert client.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.retrieve(created.id)
    assert error.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_input_items_list_pages_through_every_item(client):
    items = [{"role": "user", "content": f"message {i}"} for i in range(25)]
    created = client.responses.create(model="gpt-test", input=items)
    page = client.responses.input_items.list(created.id, limit=4, order="asc")
    assert len(page.data) == 4 and page.has_more
    texts = [item.content[0].text for item in page]  # auto-paging follows `after` cursors
    assert texts == [f"message {i}" for i in range(25)]
    newest = client.responses.input_items.list(created.id)
    assert newest.data[0].content[0].text == "message 24" and len(newest.data) == 20


def test_a_three_turn_chain(client, upstream):
    upstream.script(Reply(text="Noted, Bo."), Reply(text="Your name is Bo."), Reply(text="Goodbye Bo."))
    first = client.responses.create(model="gpt-test", input="My name is Bo.")
    second = client.responses.create(model="gpt-test", input="What is my name?", previous_response_id=first.id)
    with client.responses.stream(model="gpt-test", input="Bye", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert third.output_text == "Goodbye Bo." and third.previous_response_id == second.id
    sent = upstream.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["My name is Bo.", "Noted, Bo.", "What is my name?", "Your name is Bo.",
                                            "Bye"]


def test_a_tool_call_round_trip(client, upstream):
    tools = [{"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": True}]
    upstream.script(Reply(text="", tool_calls=[{"id": "call_9", "name": "get_weather",
                                                "arguments": '{"city":"Rome"}'}]),
                    Reply(text="Sunny in Rome."))
    with client.responses.stream(model="gpt-test", input="Weather in Rome?", tools=tools) as stream:
        first = stream.get_final_response()
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city":"Rome"}'
    second = client.responses.create(model="gpt-test", previous_response_id=first.id, tools=tools,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny"}])
    assert second.output_text == "Sunny in Rome."
    assert upstream.requests[-1].json["messages"][-1] == {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}


def test_errors_reach_the_sdk_as_typed_exceptions(client, upstream):
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="no-such-model", input="x")
    assert bad.value.code == "model_not_found" and bad.value.param == "model"
    with pytest.raises(openai.BadRequestError) as chain:
        client.responses.create(model="gpt-test", input="x", previous_response_id="resp_missing", stream=True)
    assert chain.value.code == "previous_response_not_found"
    upstream.script(Fail(503, "down"))
    with pytest.raises(openai.InternalServerError) as down:
        client.responses.create(model="gpt-test", input="x")
    assert down.value.status_code == 503


def test_a_failure_mid_stream_reaches_the_sdk_as_response_failed(client, upstream):
    upstream.script(Reply(text="a b c d e f", drop_after=3))
    events = list(client.responses.create(model="gpt-test", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert client.responses.retrieve(events[-1].response.id).status == "failed"
