"""The OpenAI Agents SDK (`openai-agents`) against the gateway under gunicorn: an agent with a
function tool, through `OpenAIResponsesModel` on an `AsyncOpenAI` pointed at the gateway (in
strict validation mode, so anything the SDK's models cannot parse fails), run whole and streamed,
on each upstream type. Tracing is disabled: its exporter would post spans to OpenAI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from tests.e2e.clients import MODELS, Upstreams, config_yaml, tool_names
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat

pytestmark = pytest.mark.e2e

RESULTS = {"responses": resp.last_tool_result, "chat": chat.last_tool_result,
           "anthropic": anth.last_tool_result}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    set_tracing_disabled(True)
    fakes = Upstreams()
    yield fakes
    fakes.close()


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams) -> Iterator[GatewayProcess]:
    with GatewayProcess(config_yaml(upstreams)) as gw:
        yield gw


@pytest.fixture
def fresh(upstreams: Upstreams) -> Upstreams:
    upstreams.reset()
    return upstreams


def _agent(client: AsyncOpenAI, kind: str, calls: list[str]) -> Agent[Any]:
    @function_tool
    def order_status(order_id: str) -> str:
        """Look up the delivery status of an order.

        Args:
            order_id: The order's id, such as A42.
        """
        calls.append(order_id)
        return f"order {order_id} status: shipped-7731"

    return Agent(name="Support", instructions="Answer with the order's status.", tools=[order_status],
                 model=OpenAIResponsesModel(MODELS[kind], client))


def _client(gateway: GatewayProcess) -> AsyncOpenAI:
    # Closed after each run (`async with`): a pooled connection left open would hold up gunicorn's
    # graceful shutdown at the end of the module.
    return AsyncOpenAI(base_url=gateway.base_url, api_key="sk-agents-client", max_retries=0,
                       _strict_response_validation=True)


def _script(upstreams: Upstreams, kind: str) -> None:
    arguments = {"order_id": "A42"}
    if kind == "responses":
        upstreams.responses.script(
            resp.Reply(text="", tool_calls=[{"call_id": "call_ag1", "name": "order_status",
                                             "arguments": json.dumps(arguments)}]),
            resp.Reply(text="Your order: ", quote_tool_result=True))
    elif kind == "chat":
        upstreams.chat.script(
            chat.Reply(text="", tool_calls=[{"id": "call_ag1", "name": "order_status",
                                             "arguments": json.dumps(arguments)}]),
            chat.Reply(text="Your order: ", quote_tool_result=True))
    else:
        upstreams.anthropic.script(
            anth.Reply(text="", tool_calls=[{"id": "call_ag1", "name": "order_status", "input": arguments}]),
            anth.Reply(text="Your order: ", quote_tool_result=True))


def _check_upstream(upstreams: Upstreams, kind: str) -> None:
    fake = upstreams.of(kind)
    assert len(fake.requests) == 2
    first, second = fake.requests[0].json, fake.requests[1].json
    assert "order_status" in tool_names(first["tools"])
    assert "shipped-7731" in RESULTS[kind](second)


@pytest.mark.parametrize("kind", list(MODELS))
def test_run_calls_the_tool_and_answers_with_its_result(gateway: GatewayProcess, fresh: Upstreams,
                                                         kind: str) -> None:
    _script(fresh, kind)
    calls: list[str] = []

    async def run() -> Any:
        async with _client(gateway) as client:
            return await Runner.run(_agent(client, kind, calls), "Where is my order A42?")

    result = asyncio.run(run())
    assert calls == ["A42"]
    assert result.final_output == "Your order: order A42 status: shipped-7731"
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
    _check_upstream(fresh, kind)


@pytest.mark.parametrize("kind", list(MODELS))
def test_run_streamed_calls_the_tool_and_streams_the_answer(gateway: GatewayProcess, fresh: Upstreams,
                                                             kind: str) -> None:
    _script(fresh, kind)
    calls: list[str] = []

    async def run() -> tuple[Any, list[str], list[str]]:
        items: list[str] = []
        deltas: list[str] = []
        async with _client(gateway) as client:
            result = Runner.run_streamed(_agent(client, kind, calls), "Where is my order A42?")
            async for event in result.stream_events():
                if event.type == "run_item_stream_event":
                    items.append(event.item.type)
                elif event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
        return result, items, deltas

    result, items, deltas = asyncio.run(run())
    assert calls == ["A42"]
    assert items == ["tool_call_item", "tool_call_output_item", "message_output_item"], items
    assert "".join(deltas) == result.final_output == "Your order: order A42 status: shipped-7731"
    _check_upstream(fresh, kind)
    assert all(r.json.get("stream") is True for r in fresh.of(kind).requests)
