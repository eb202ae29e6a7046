"""Anthropic's clients against the gateway's /v1/messages under real gunicorn, on every provider type
behind it (Chat Completions, the upstream's own Responses API, Anthropic, Gemini): the `anthropic`
SDK in strict mode (`messages.create`, `messages.stream` and its final message, a tool round trip,
an image, `count_tokens`, errors as its typed exceptions, a key sent as x-api-key), LangChain's
`ChatAnthropic` (invoke, stream, bind_tools), and a client hanging up mid-stream."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import psycopg
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import SecretStr

from tests.e2e.gunicorn import ROOT, GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import FakeServer
from tests.fakes.steps import Count, Fail

pytestmark = pytest.mark.e2e

MODEL = {"chat": "chat-model", "responses": "responses-model", "anthropic": "claude", "google": "gemini"}
REPLY = {"chat": chat.Reply, "responses": resp.Reply, "anthropic": anth.Reply, "google": gem.Reply}
TOOLS: list[Any] = [{"name": "weather", "description": "Today's weather in a city.",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}]
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005"
    "0001ff5a1b8e0b0000000049454e44ae426082")).decode()


def calls(kind: str, city: str = "Paris", name: str = "weather") -> Any:
    """A reply of `kind`'s upstream that calls tool `name` for `city`."""
    arguments = {"city": city}
    if kind == "chat":
        return chat.Reply(text="", tool_calls=[{"id": "call_w1", "name": name, "arguments": json.dumps(arguments)}])
    if kind == "responses":
        return resp.Reply(text="", tool_calls=[{"call_id": "call_w1", "name": name,
                                                "arguments": json.dumps(arguments)}])
    if kind == "anthropic":
        return anth.Reply(text="", tool_calls=[{"id": "toolu_w1", "name": name, "input": arguments}])
    return gem.Reply(text="", function_calls=[{"name": name, "args": arguments}])


@pytest.fixture
def fakes(provider_fakes: dict[str, FakeServer]) -> dict[str, FakeServer]:
    for fake in provider_fakes.values():
        fake.reset()
    return provider_fakes


@pytest.fixture(scope="module")
def http_client() -> Iterator[httpx2.Client]:
    # Closed before gunicorn stops, so no pooled connection holds up its graceful shutdown.
    with httpx2.Client(timeout=30) as client:
        yield client


@pytest.fixture
def client(provider_gateway: GatewayProcess, http_client: httpx2.Client) -> anthropic.Anthropic:
    # Auth is off on this gateway: the key is sent (as x-api-key) and not checked.
    return anthropic.Anthropic(base_url=provider_gateway.url, api_key="sk-ant-client", max_retries=0,
                               http_client=http_client, _strict_response_validation=True)


def error_type(error: anthropic.APIStatusError) -> str:
    """The `error.type` of the Anthropic error body the SDK parsed."""
    assert isinstance(error.body, dict) and error.body["type"] == "error", error.body
    kind: str = error.body["error"]["type"]
    return kind


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize("kind", list(MODEL))
def test_messages_create(client, fakes, kind):
    fakes[kind].script(REPLY[kind](text="Hello there."))
    message = client.messages.create(model=MODEL[kind], max_tokens=100, system="Be brief.",
                                     messages=[{"role": "user", "content": "Hi"}])
    assert message.id.startswith("msg_") and message.model == MODEL[kind]
    assert text_of(message) == "Hello there." and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert "Be brief." in json.dumps(fakes[kind].last.json)


@pytest.mark.parametrize("kind", list(MODEL))
def test_messages_stream_and_its_final_message(client, fakes, kind):
    fakes[kind].script(REPLY[kind](text="One two three four."))
    with client.messages.stream(model=MODEL[kind], max_tokens=100,
                                messages=[{"role": "user", "content": "Count"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "One two three four."
    assert text_of(final) == "One two three four." and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("kind", list(MODEL))
def test_a_tool_round_trip(client, fakes, kind):
    fake = fakes[kind]
    fake.script(calls(kind), REPLY[kind](text="It is ", quote_tool_result=True))
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    first = client.messages.create(model=MODEL[kind], max_tokens=200, tools=TOOLS, messages=[question])
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "weather" and use.input == {"city": "Paris"}
    answer = client.messages.create(model=MODEL[kind], max_tokens=200, tools=TOOLS, messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]}])
    assert text_of(answer) == "It is sunny, 21 C" and answer.stop_reason == "end_turn"


@pytest.mark.parametrize("kind", list(MODEL))
def test_a_streamed_tool_call(client, fakes, kind):
    fakes[kind].script(calls(kind, "Oslo"))
    with client.messages.stream(model=MODEL[kind], max_tokens=200, tools=TOOLS,
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    use = next(block for block in final.content if block.type == "tool_use")
    assert (use.name, use.input, final.stop_reason) == ("weather", {"city": "Oslo"}, "tool_use")


@pytest.mark.parametrize("kind", list(MODEL))
def test_an_image(client, fakes, kind):
    fakes[kind].script(REPLY[kind](text="A dot."))
    message = client.messages.create(model=MODEL[kind], max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"}]}])
    assert text_of(message) == "A dot."
    assert PNG in json.dumps(fakes[kind].last.json)


@pytest.mark.parametrize("kind", list(MODEL))
def test_count_tokens(client, fakes, kind):
    if kind == "anthropic":
        fakes[kind].script(Count(input_tokens=42))
    counted = client.messages.count_tokens(model=MODEL[kind], system="Be brief.", tools=TOOLS,
                                           messages=[{"role": "user", "content": "How many tokens is this?"}])
    assert counted.input_tokens > 0
    if kind == "anthropic":
        assert counted.input_tokens == 42  # the upstream's own count endpoint
        assert fakes[kind].last.path == "/v1/messages/count_tokens"


def test_thinking_from_a_responses_upstream_round_trips_as_its_reasoning_item(client, fakes):
    fake = fakes["responses"]
    fake.script(resp.Reply(text="42.", reasoning_summary="Add them.", encrypted_content="enc-state"),
                resp.Reply(text="Yes."))
    first = client.messages.create(model="responses-model", max_tokens=2000,
                                   thinking={"type": "enabled", "budget_tokens": 1024},
                                   messages=[{"role": "user", "content": "40 + 2?"}])
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Add them." and thinking.signature
    assert fake.last.json["reasoning"] == {"effort": "low", "summary": "auto"}
    client.messages.create(model="responses-model", max_tokens=2000, messages=[
        {"role": "user", "content": "40 + 2?"}, {"role": "assistant", "content": first.content},
        {"role": "user", "content": "Sure?"}])
    replayed = [item for item in fake.last.json["input"] if item.get("type") == "reasoning"]
    assert [item["encrypted_content"] for item in replayed] == ["enc-state"]


def test_claude_thinks_when_asked_and_its_signed_thinking_continues_the_tool_use(client, fakes):
    """Extended thinking on an Anthropic upstream: the budget as sent, the thinking block streamed
    back with Claude's own signature, and the tool round trip sent back with it, which the fake
    (like Anthropic) refuses unless the signed block opens the tool call's turn."""
    fake = fakes["anthropic"]
    fake.script(anth.Reply(text="", thinking="Paris: call the weather tool.", signature="sig-e2e-1",
                           tool_calls=[{"id": "toolu_t1", "name": "weather", "input": {"city": "Paris"}}]),
                anth.Reply(text="It is ", quote_tool_result=True))
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    with client.messages.stream(model="claude", max_tokens=4000, tools=TOOLS, thinking=thinking,
                                messages=[question]) as stream:
        deltas = [event.type for event in stream if event.type in ("thinking", "signature")]
        first = stream.get_final_message()
    assert deltas == ["thinking", "signature"]
    assert fake.last.json["thinking"] == thinking and fake.last.json["max_tokens"] == 4000
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    assert (first.content[0].thinking, first.content[0].signature) == ("Paris: call the weather tool.", "sig-e2e-1")
    answer = client.messages.create(model="claude", max_tokens=4000, tools=TOOLS, thinking=thinking, messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_t1", "content": "sunny"}]}])
    assert text_of(answer) == "It is sunny" and answer.stop_reason == "end_turn"
    assert fake.last.json["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Paris: call the weather tool.", "signature": "sig-e2e-1"}
    with pytest.raises(anthropic.BadRequestError) as too_big:
        client.messages.create(model="claude", max_tokens=2048, thinking=thinking, messages=[question])
    assert "budget_tokens" in str(too_big.value)


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_ends_a_claude_answer_with_its_stop_reason(client, fakes, stream):
    fakes["anthropic"].script(anth.Reply(text="Counting: one two STOP three"))
    request: Any = {"model": "claude", "max_tokens": 100, "stop_sequences": ["STOP"],
                    "messages": [{"role": "user", "content": "Count"}]}
    if stream:
        with client.messages.stream(**request) as reading:
            message = reading.get_final_message()
    else:
        message = client.messages.create(**request)
    assert fakes["anthropic"].last.json["stop_sequences"] == ["STOP"]
    assert text_of(message) == "Counting: one two "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


def test_errors_are_the_sdks_typed_exceptions(client, fakes):
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude", max_tokens=0, messages=[{"role": "user", "content": "Hi"}])
    assert bad.value.status_code == 400 and error_type(bad.value) == "invalid_request_error"
    assert bad.value.request_id
    fakes["anthropic"].script(Fail(529, "Overloaded", type="overloaded_error"))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    # The upstream's overload is the gateway's 503, `overloaded_error` as Anthropic would say it.
    assert overloaded.value.status_code == 503 and error_type(overloaded.value) == "overloaded_error"
    fakes["chat"].script(chat.Reply(text="one two three four five", drop_after=3))
    stream = client.messages.stream(model="chat-model", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(anthropic.APIStatusError) as mid_stream, stream as reading:
        reading.get_final_message()  # the error event comes while the stream is read
    assert error_type(mid_stream.value) == "api_error"


# --- LangChain's ChatAnthropic -----------------------------------------------------------------

@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: sunny-21C"


def chat_anthropic(gateway: GatewayProcess, model: str) -> ChatAnthropic:
    return ChatAnthropic(model=model, base_url=gateway.url, api_key=SecretStr("sk-langchain"),  # type: ignore[call-arg]
                         max_retries=0, max_tokens=200, timeout=30)


@pytest.mark.parametrize("kind", list(MODEL))
def test_langchain_invoke_stream_and_tools(provider_gateway, fakes, kind):
    fake = fakes[kind]
    llm = chat_anthropic(provider_gateway, MODEL[kind])
    fake.script(REPLY[kind](text="Invoked answer."), REPLY[kind](text="Streamed answer here."))
    answer = llm.invoke([HumanMessage("Hi")])
    assert isinstance(answer, AIMessage) and answer.text == "Invoked answer."
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("Hi"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks) and len(chunks) > 2
    assert "".join(c.text for c in chunks) == "Streamed answer here."

    fake.script(calls(kind, name="get_weather"), REPLY[kind](text="Weather: ", quote_tool_result=True))
    with_tools = llm.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Weather in Paris?")]
    called = with_tools.invoke(messages)
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert "get_weather" in json.dumps(fake.last.json)  # the bound tool reached the upstream
    call = called.tool_calls[0]
    messages += [called, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    assert with_tools.invoke(messages).text == "Weather: Paris: sunny-21C"


# --- a gateway of its own: auth on, transcripts kept -----------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[anth.FakeAnthropic]:
    fake = anth.FakeAnthropic()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def keyed_gateway(upstream: anth.FakeAnthropic) -> Iterator[GatewayProcess]:
    config = f"""
logging: {{format: text, level: warn}}
auth: {{enabled: true}}
providers:
  anthropic: {{type: anthropic, api_key: sk-up, endpoint: "{upstream.url}", retry: {{max_retries: 0}}}}
models: [{{name: claude, provider: anthropic}}]
conversations: {{store_stateless_calls: true}}
"""
    with GatewayProcess(config, workers=1) as gw:
        yield gw


@pytest.fixture(scope="module")
def key(keyed_gateway: GatewayProcess) -> str:
    done = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", f"ant-{secrets.token_hex(2)}",
                           "--owner", "acme"], cwd=ROOT, env=keyed_gateway.env(), check=True, capture_output=True,
                          text=True, timeout=60)
    return done.stdout.strip()


def stored(gateway: GatewayProcess, message_id: str) -> tuple[str, str]:
    with psycopg.connect(gateway.database_url) as conn:
        row = conn.execute("SELECT status, interrupted FROM conversations_app_storedresponse WHERE id = %s",
                           ["resp_" + message_id.removeprefix("msg_")]).fetchone()
    assert row is not None, f"{message_id} was not stored"
    return row[0], row[1]


def test_a_key_is_taken_as_x_api_key_and_a_bad_one_is_an_authentication_error(keyed_gateway, key, upstream):
    upstream.reset()
    good = anthropic.Anthropic(base_url=keyed_gateway.url, api_key=key, max_retries=0,
                               _strict_response_validation=True)
    message = good.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert text_of(message) == "Hello from the fake Anthropic."
    assert stored(keyed_gateway, message.id) == ("completed", "")
    bad = anthropic.Anthropic(base_url=keyed_gateway.url, api_key="gwk_00000000_not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert error_type(refused.value) == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "Hi"}])


def test_a_client_hanging_up_mid_stream_settles_the_turn_and_closes_the_upstream(keyed_gateway, key, upstream):
    upstream.reset()
    upstream.script(anth.Reply(text=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.05))
    client = anthropic.Anthropic(base_url=keyed_gateway.url, api_key=key, max_retries=0)
    with client.messages.stream(model="claude", max_tokens=1000,
                                messages=[{"role": "user", "content": "Talk"}]) as stream:
        for event in stream:
            if event.type == "message_start":
                message_id = event.message.id
            if event.type == "text":
                break  # the answer has begun: hang up
    assert upstream.requests[0].client_disconnected.wait(5)
    deadline = time.monotonic() + 5
    while stored(keyed_gateway, message_id)[0] == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(keyed_gateway, message_id) == ("incomplete", "client_gone")
