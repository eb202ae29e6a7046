"""`POST /v1/chat/completions` under real gunicorn, on every provider type (a Chat Completions,
a Responses, an Anthropic and a Gemini upstream), with the clients people use:

- the openai SDK in strict mode: `chat.completions.create` (JSON; a stream with `include_usage`;
  a tool call round trip; image input), `chat.completions.parse` with a pydantic model; every
  body and chunk also validated against the OpenAPI spec (tests/contract.py);
- LangChain's `ChatOpenAI` without `use_responses_api`: invoke, stream, bind_tools,
  with_structured_output;
- a client that hangs up mid-stream: the upstream call is closed and the turn settled.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import psycopg
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import SecretStr

from responses_app.providers.anthropic import OUTPUT_TOOL
from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.e2e.test_langchain import Weather, get_weather
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.e2e

MODEL = {"chat": "chat-model", "responses": "responses-model", "anthropic": "claude", "google": "gemini"}
REPLY = {"chat": chat.Reply, "responses": resp.Reply, "anthropic": anth.Reply, "google": gem.Reply}
RESULTS = {"chat": chat.last_tool_result, "responses": resp.last_tool_result, "anthropic": anth.last_tool_result,
           "google": gem.last_tool_result}
KINDS = list(MODEL)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Today's weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


def _weather_call(kind: str, call_id: str = "call_w1") -> Any:
    """A reply that calls get_weather(city="Rome") in the upstream's own wire format."""
    if kind == "chat":
        return chat.Reply(text="", tool_calls=[{"id": call_id, "name": "get_weather", "arguments": '{"city":"Rome"}'}])
    if kind == "responses":
        return resp.Reply(text="", tool_calls=[{"call_id": call_id, "name": "get_weather",
                                                "arguments": '{"city":"Rome"}'}])
    if kind == "anthropic":
        return anth.Reply(text="", tool_calls=[{"id": call_id, "name": "get_weather", "input": {"city": "Rome"}}])
    return gem.Reply(text="", function_calls=[{"name": "get_weather", "args": {"city": "Rome"}}])


def _structured(kind: str, answer: dict[str, Any]) -> Any:
    if kind == "anthropic":
        # The Messages API has no JSON-schema mode: the gateway forces a call of an output tool.
        return anth.Reply(text="", tool_calls=[{"id": "toolu_so1", "name": OUTPUT_TOOL, "input": answer}])
    return REPLY[kind](text=json.dumps(answer))


@pytest.fixture
def fakes(provider_fakes: dict[str, FakeServer]) -> dict[str, FakeServer]:
    for fake in provider_fakes.values():
        fake.reset()
    return provider_fakes


@pytest.fixture
def client(provider_gateway: GatewayProcess, fakes: dict[str, FakeServer]) -> Iterator[OpenAI]:
    with OpenAI(base_url=provider_gateway.base_url, api_key="sk-client", max_retries=0,
                _strict_response_validation=True) as sdk:
        yield sdk


def _completion(raw: Any) -> Any:
    """The parsed completion of a `with_raw_response` call, its raw body validated against the spec."""
    validate("ChatCompletion", json.loads(raw.text))
    return raw.parse()


# --- the openai SDK ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_create(client: OpenAI, fakes: dict[str, FakeServer], kind: str) -> None:
    fakes[kind].script(REPLY[kind](text="Hello from the gateway."))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL[kind], messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    completion = _completion(raw)
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL[kind]
    assert completion.choices[0].message.content == "Hello from the gateway."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert "Be brief." in json.dumps(fakes[kind].last.json)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_with_usage(client: OpenAI, fakes: dict[str, FakeServer], kind: str) -> None:
    fakes[kind].script(REPLY[kind](text="one two three four"))
    stream = client.chat.completions.create(model=MODEL[kind], messages=[{"role": "user", "content": "Count."}],
                                            stream=True, stream_options={"include_usage": True})
    found = list(stream)
    for chunk in found:
        validate("ChatCompletionChunk", chunk.to_dict())
    assert found[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in found if c.choices) == "one two three four"
    assert len([c for c in found if c.choices and c.choices[0].delta.content]) >= 4  # as the upstream sent it
    assert found[-2].choices[0].finish_reason == "stop"
    assert found[-1].choices == [] and found[-1].usage is not None and found[-1].usage.completion_tokens > 0
    assert len({c.id for c in found}) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_cut_the_answer(client: OpenAI, fakes: dict[str, FakeServer], stream: bool) -> None:
    fakes["chat"].script(chat.Reply(text="one two three four"))
    messages: Any = [{"role": "user", "content": "Count."}]
    if stream:
        found = list(client.chat.completions.create(model="chat-model", messages=messages, stop=[" three", "x"],
                                                    stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in found if c.choices)
        finish = found[-1].choices[0].finish_reason
    else:
        completion = _completion(client.chat.completions.with_raw_response.create(
            model="chat-model", messages=messages, stop=[" three", "x"]))
        text, finish = completion.choices[0].message.content, completion.choices[0].finish_reason
    assert fakes["chat"].last.json["stop"] == [" three", "x"]
    assert text == "one two" and finish == "stop"
    # One string is one sequence; more than Chat's 4 is a 400 naming the parameter.
    client.chat.completions.create(model="chat-model", messages=messages, stop="two")
    assert fakes["chat"].last.json["stop"] == ["two"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat-model", messages=messages, stop=["a", "b", "c", "d", "e"])
    assert bad.value.status_code == 400 and bad.value.param == "stop"


@pytest.mark.parametrize("kind", KINDS)
def test_a_tool_call_round_trip(client: OpenAI, fakes: dict[str, FakeServer], kind: str) -> None:
    fake = fakes[kind]
    fake.script(_weather_call(kind), REPLY[kind](text="Weather report: ", quote_tool_result=True))
    messages: list[Any] = [{"role": "user", "content": "Weather in Rome?"}]
    first = _completion(client.chat.completions.with_raw_response.create(
        model=MODEL[kind], messages=messages, tools=[WEATHER_TOOL]))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == ("function", "get_weather",
                                                                                    {"city": "Rome"})
    messages += [choice.message.model_dump(exclude_unset=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Rome: sunny-21C"}]
    # The second turn streams: the tool result goes up, the answer comes down in chunks.
    stream = client.chat.completions.create(model=MODEL[kind], messages=messages, tools=[WEATHER_TOOL], stream=True)
    found = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in found) == "Weather report: Rome: sunny-21C"
    assert RESULTS[kind](fake.requests[1].json) == "Rome: sunny-21C"


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_tool_calls_come_in_indexed_fragments(client: OpenAI, fakes: dict[str, FakeServer],
                                                        kind: str) -> None:
    fakes[kind].script(_weather_call(kind, "call_s1"))
    found = list(client.chat.completions.create(model=MODEL[kind], stream=True, tools=[WEATHER_TOOL],
                                                messages=[{"role": "user", "content": "Weather in Rome?"}]))
    fragments = [d for c in found for d in c.choices[0].delta.tool_calls or []]
    assert {d.index for d in fragments} == {0}
    assert fragments[0].id and fragments[0].function and fragments[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in fragments if d.function)) == {"city": "Rome"}
    assert found[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("kind", KINDS)
def test_image_input(client: OpenAI, fakes: dict[str, FakeServer], kind: str) -> None:
    fakes[kind].script(REPLY[kind](text="A single pixel."))
    completion = _completion(client.chat.completions.with_raw_response.create(model=MODEL[kind], messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]))
    assert completion.choices[0].message.content == "A single pixel."
    sent = json.dumps(fakes[kind].last.json)
    assert PNG in sent and "What is this?" in sent


@pytest.mark.parametrize("kind", KINDS)
def test_parse_with_a_pydantic_model(client: OpenAI, fakes: dict[str, FakeServer], kind: str) -> None:
    answer: dict[str, Any] = {"city": "Rome", "temperature_c": 21, "sunny": True}
    fakes[kind].script(_structured(kind, answer))
    parsed = client.chat.completions.parse(model=MODEL[kind], response_format=Weather,
                                           messages=[{"role": "user", "content": "Weather in Rome as JSON."}])
    assert parsed.choices[0].message.parsed == Weather(**answer)
    assert parsed.choices[0].message.content == json.dumps(answer)


def test_a_responses_upstream_gets_what_it_can_carry_and_nothing_chat_only(client: OpenAI,
                                                                          fakes: dict[str, FakeServer]) -> None:
    fakes["responses"].script(resp.Reply(text="Fine."))
    _completion(client.chat.completions.with_raw_response.create(
        model="responses-model", messages=[{"role": "developer", "content": "Be terse."},
                                           {"role": "user", "content": "Hi", "name": "ada"}],
        reasoning_effort="low", verbosity="low", service_tier="flex", prompt_cache_key="k1", presence_penalty=0.5,
        safety_identifier="u-hash", max_completion_tokens=64, stop=["END"], seed=3, logprobs=True, top_logprobs=2,
        response_format={"type": "json_object"}, user="u-1"))
    sent = fakes["responses"].last.json
    assert sent["reasoning"] == {"effort": "low"}
    assert sent["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert (sent["service_tier"], sent["prompt_cache_key"], sent["presence_penalty"]) == ("flex", "k1", 0.5)
    assert (sent["safety_identifier"], sent["max_output_tokens"], sent["user"]) == ("u-hash", 64, "u-1")
    assert sent["input"][0]["role"] == "developer" and sent["store"] is False
    for chat_only in ("messages", "stop", "seed", "logprobs", "top_logprobs", "reasoning_effort", "verbosity",
                      "max_completion_tokens", "response_format", "name"):
        assert chat_only not in sent, chat_only
    assert "name" not in sent["input"][1]


def test_errors_reach_the_sdk_as_typed_exceptions(client: OpenAI, fakes: dict[str, FakeServer]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "x"}], n=2)
    assert refused.value.param == "n" and refused.value.code == "invalid_value"
    fakes["anthropic"].script(anth.Reply(text="a b c d e f g", drop_after=4))
    stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError, match="broke off the stream") as failed:
        list(stream)
    assert failed.value.body["type"] == "server_error"  # type: ignore[index]
    assert fakes["chat"].requests == []  # the 400 reached no upstream


def test_a_client_hanging_up_mid_stream_settles_the_turn_and_closes_the_upstream(
        provider_gateway: GatewayProcess, fakes: dict[str, FakeServer]) -> None:
    fake = fakes["google"]
    fake.script(gem.Reply(text=" ".join(f"word{n}" for n in range(200)), chunk_delay=0.05))
    body = json.dumps({"model": "gemini", "stream": True, "store": True,
                       "messages": [{"role": "user", "content": "Tell me a long story."}]}).encode()
    port = int(provider_gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        received = b""
        while received.count(b'"content":"') < 3:  # the role chunk's "" and two words
            chunk = sock.recv(65536)
            assert chunk, received  # the gateway must not end the stream first
            received += chunk
    completion_id = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
    assert fake.requests[0].client_disconnected.wait(5)  # the gateway hung up on the upstream too
    response_id = "resp_" + completion_id.removeprefix("chatcmpl-")
    deadline = time.monotonic() + 10
    with psycopg.connect(provider_gateway.database_url.replace("postgres://", "postgresql://")) as conn:
        while True:
            row = conn.execute("SELECT status, interrupted FROM conversations_app_storedresponse WHERE id = %s",
                               (response_id,)).fetchone()
            conn.commit()
            if (row and row[0] != "in_progress") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert row == ("incomplete", "client_gone")


# --- LangChain's ChatOpenAI, on Chat Completions ---------------------------------------------------

# The gateway paths LangChain's requests went to (ChatOpenAI may switch to the Responses API by itself).
PATHS: list[str] = []


@pytest.fixture(scope="module")
def http_client(provider_gateway: GatewayProcess) -> Iterator[httpx2.Client]:
    # Our own client, closed before gunicorn stops: LangChain's default one is cached process-wide
    # and never closed, and its pooled connections would hold up gunicorn's graceful shutdown.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANGSMITH_TRACING", "false")
        env.setenv("LANGCHAIN_TRACING_V2", "false")
        with httpx2.Client(timeout=30, event_hooks={"request": [lambda r: PATHS.append(r.url.path)]}) as http:
            yield http


@pytest.fixture
def llm(provider_gateway: GatewayProcess, http_client: httpx2.Client,
        fakes: dict[str, FakeServer]) -> Iterator[Callable[[str], ChatOpenAI]]:
    def make(kind: str) -> ChatOpenAI:
        return ChatOpenAI(model=MODEL[kind], base_url=provider_gateway.base_url,
                          api_key=SecretStr("sk-langchain-client"), max_retries=0, http_client=http_client,
                          stream_usage=True)

    PATHS.clear()
    yield make
    assert PATHS and set(PATHS) == {"/v1/chat/completions"}


@pytest.mark.parametrize("kind", KINDS)
def test_langchain_invoke_and_stream(llm: Any, fakes: dict[str, FakeServer], kind: str) -> None:
    fakes[kind].script(REPLY[kind](text="Hello from the gateway."), REPLY[kind](text="one two three four"))
    message = llm(kind).invoke("Say hello.")
    assert isinstance(message, AIMessage) and message.text == "Hello from the gateway."
    assert message.usage_metadata and message.usage_metadata["total_tokens"] > 0
    assert message.response_metadata["finish_reason"] == "stop"
    chunks = list(llm(kind).stream("Count to four."))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text == "one two three four"
    assert whole.usage_metadata and whole.usage_metadata["total_tokens"] > 0
    assert len(fakes[kind].requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_langchain_bind_tools_round_trip(llm: Any, fakes: dict[str, FakeServer], kind: str) -> None:
    fake = fakes[kind]
    fake.script(_weather_call(kind, "call_lc1"), REPLY[kind](text="Weather report: ", quote_tool_result=True))
    model = llm(kind).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("What's the weather in Rome?")]
    call = model.invoke(history)
    [(name, args, call_id)] = [(c["name"], c["args"], c["id"]) for c in call.tool_calls]
    assert (name, args) == ("get_weather", {"city": "Rome"}) and call_id
    history += [call, get_weather.invoke(call.tool_calls[0])]
    final = model.invoke(history)
    assert final.text == "Weather report: Rome: sunny-21C"
    assert RESULTS[kind](fake.requests[1].json) == "Rome: sunny-21C"


@pytest.mark.parametrize("kind", KINDS)
def test_langchain_with_structured_output(llm: Any, fakes: dict[str, FakeServer], kind: str) -> None:
    answer: dict[str, Any] = {"city": "Rome", "temperature_c": 21, "sunny": True}
    fakes[kind].script(_structured(kind, answer))
    weather = llm(kind).with_structured_output(Weather).invoke("Weather in Rome as JSON.")
    assert weather == Weather(**answer)
    assert "Weather" in json.dumps(fakes[kind].last.json)  # the schema reached the upstream
