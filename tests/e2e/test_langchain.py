"""LangChain's `ChatOpenAI(use_responses_api=True)` against the gateway under gunicorn: invoke,
stream, a tool call round trip with `bind_tools`, and `with_structured_output(<pydantic model>)`,
on each upstream type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from responses_app.providers.anthropic import OUTPUT_TOOL
from tests.e2e.clients import MODELS, UPSTREAM_MODELS, Upstreams, config_yaml, tool_names
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat

pytestmark = pytest.mark.e2e

REPLY = {"responses": resp.Reply, "chat": chat.Reply, "anthropic": anth.Reply}
RESULTS = {"responses": resp.last_tool_result, "chat": chat.last_tool_result, "anthropic": anth.last_tool_result}


class Weather(BaseModel):
    city: str
    temperature_c: int
    sunny: bool


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: sunny-21C"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    # LangSmith tracing stays off even where a developer's environment turns it on.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANGSMITH_TRACING", "false")
        env.setenv("LANGCHAIN_TRACING_V2", "false")
        fakes = Upstreams()
        yield fakes
        fakes.close()


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams) -> Iterator[GatewayProcess]:
    with GatewayProcess(config_yaml(upstreams)) as gw:
        yield gw


@pytest.fixture(scope="module")
def http_client(gateway: GatewayProcess) -> Iterator[httpx2.Client]:
    # Our own client, closed before gunicorn stops: LangChain's default one is cached process-wide
    # and never closed, and its pooled connections would hold up gunicorn's graceful shutdown.
    with httpx2.Client(timeout=30) as client:
        yield client


@pytest.fixture
def llm(gateway: GatewayProcess, http_client: httpx2.Client, upstreams: Upstreams) -> Callable[[str], ChatOpenAI]:
    upstreams.reset()

    def make(kind: str) -> ChatOpenAI:
        return ChatOpenAI(model=MODELS[kind], base_url=gateway.base_url, api_key=SecretStr("sk-langchain-client"),
                          use_responses_api=True, max_retries=0, http_client=http_client)

    return make


@pytest.mark.parametrize("kind", list(MODELS))
def test_invoke(llm: Any, upstreams: Upstreams, kind: str) -> None:
    upstreams.of(kind).script(REPLY[kind](text="Hello from the gateway."))
    message = llm(kind).invoke("Say hello.")
    assert isinstance(message, AIMessage)
    assert message.text == "Hello from the gateway."
    assert message.usage_metadata and message.usage_metadata["total_tokens"] > 0
    [sent] = upstreams.of(kind).requests
    assert sent.json["model"] == UPSTREAM_MODELS[kind] and "Say hello." in json.dumps(sent.json)


@pytest.mark.parametrize("kind", list(MODELS))
def test_stream(llm: Any, upstreams: Upstreams, kind: str) -> None:
    upstreams.of(kind).script(REPLY[kind](text="one two three four"))
    chunks = list(llm(kind).stream("Count to four."))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert len([c for c in chunks if c.text]) >= 4  # word by word, as the upstream sent it
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text == "one two three four"
    assert whole.usage_metadata and whole.usage_metadata["total_tokens"] > 0
    assert upstreams.of(kind).last.json["stream"] is True


def _weather_call(kind: str) -> Any:
    if kind == "responses":
        return resp.Reply(text="", tool_calls=[{"call_id": "call_lc1", "name": "get_weather",
                                                "arguments": '{"city": "Rome"}'}])
    if kind == "chat":
        return chat.Reply(text="", tool_calls=[{"id": "call_lc1", "name": "get_weather",
                                                "arguments": '{"city": "Rome"}'}])
    return anth.Reply(text="", tool_calls=[{"id": "call_lc1", "name": "get_weather", "input": {"city": "Rome"}}])


@pytest.mark.parametrize("kind", list(MODELS))
def test_bind_tools_round_trip(llm: Any, upstreams: Upstreams, kind: str) -> None:
    fake = upstreams.of(kind)
    fake.script(_weather_call(kind), REPLY[kind](text="Weather report: ", quote_tool_result=True))
    model = llm(kind).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("What's the weather in Rome?")]
    call = model.invoke(history)
    assert [(c["name"], c["args"], c["id"]) for c in call.tool_calls] == [("get_weather", {"city": "Rome"},
                                                                           "call_lc1")]
    history += [call, get_weather.invoke(call.tool_calls[0])]
    final = model.invoke(history)
    assert final.text == "Weather report: Rome: sunny-21C"
    assert "get_weather" in tool_names(fake.requests[0].json["tools"])
    assert RESULTS[kind](fake.requests[1].json) == "Rome: sunny-21C"


@pytest.mark.parametrize("kind", list(MODELS))
def test_with_structured_output(llm: Any, upstreams: Upstreams, kind: str) -> None:
    fake = upstreams.of(kind)
    answer: dict[str, Any] = {"city": "Rome", "temperature_c": 21, "sunny": True}
    if kind == "anthropic":
        # The Messages API has no JSON-schema mode: the gateway forces a call of an output tool
        # whose input schema is the requested one, and the call's input is the answer.
        fake.script(anth.Reply(text="", tool_calls=[{"id": "toolu_so1", "name": OUTPUT_TOOL, "input": answer}]))
    else:
        fake.script(REPLY[kind](text=json.dumps(answer)))
    weather = llm(kind).with_structured_output(Weather).invoke("Weather in Rome as JSON.")
    assert weather == Weather(**answer)
    body = fake.last.json
    if kind == "chat":
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
        schema = fmt["json_schema"]["schema"]
    elif kind == "responses":
        fmt = body["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["name"] == "Weather"
        schema = fmt["schema"]
    else:
        assert body["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}
        [tool] = [t for t in body["tools"] if t["name"] == OUTPUT_TOOL]
        schema = tool["input_schema"]
    assert set(schema["properties"]) == {"city", "temperature_c", "sunny"}
