"""The SDK's models.retrieve, responses.input_tokens.count and responses.retrieve(stream=True), in
strict validation mode, against the gateway under real gunicorn (two workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.steps import Count

pytestmark = pytest.mark.e2e


def config_yaml(openai_url: str, anthropic_url: str) -> str:
    return f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: sk-upstream, endpoint: "{openai_url}/v1", read_timeout: 10,
            retry: {{max_retries: 0}}}}
  anthropic: {{type: anthropic, api_key: sk-ant, endpoint: "{anthropic_url}", read_timeout: 10,
               retry: {{max_retries: 0}}}}
  demo: {{type: demo}}
models:
  - {{name: gpt-test, provider: openai, provider_model_id: gpt-4o-mini, aliases: [fast]}}
  - {{name: claude, provider: anthropic, provider_model_id: claude-upstream}}
  - {{name: demo, provider: demo}}
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    chat, anthropic = FakeOpenAI(), FakeAnthropic()
    yield chat, anthropic
    chat.close()
    anthropic.close()


@pytest.fixture(scope="module")
def gateway(upstreams: tuple[FakeOpenAI, FakeAnthropic]) -> Iterator[GatewayProcess]:
    with GatewayProcess(config_yaml(upstreams[0].url, upstreams[1].url)) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess, upstreams: tuple[FakeOpenAI, FakeAnthropic]) -> OpenAI:
    for fake in upstreams:
        fake.reset()
    return OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


def _wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def test_models_retrieve_by_name_and_alias_and_the_list_has_aliases(client):
    assert [m.id for m in client.models.list()] == ["gpt-test", "fast", "claude", "demo"]
    for name, owner in (("gpt-test", "openai"), ("fast", "openai"), ("claude", "anthropic")):
        model = client.models.retrieve(name)
        assert (model.id, model.object, model.owned_by, model.created) == (name, "model", owner, 0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-5-nope")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"


def test_input_tokens_count_asks_anthropic_and_counts_chat_locally(client, upstreams):
    chat, anthropic = upstreams
    anthropic.script(Count(4321))
    counted = client.responses.input_tokens.count(model="claude", input="How far is the moon?",
                                                  instructions="Answer in km.")
    assert (counted.object, counted.input_tokens) == ("response.input_tokens", 4321)
    [sent] = anthropic.requests
    assert sent.path == "/v1/messages/count_tokens" and sent.json["system"] == "Answer in km."
    assert "max_tokens" not in sent.json
    assert client.responses.input_tokens.count(model="fast", input="Hello world").input_tokens == 9
    assert chat.requests == []
    demo = client.responses.input_tokens.count(model="demo", input="one two three").input_tokens
    assert demo == client.responses.create(model="demo", input="one two three").usage.input_tokens
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_tokens.count(model="claude", input="x", previous_response_id="resp_missing")
    assert bad.value.code == "previous_response_not_found"


def _coalesced(events: list[Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for event in events:
        delta = getattr(event, "delta", None)
        if isinstance(delta, str) and out and out[-1][0] == event.type:
            out[-1] = (event.type, out[-1][1] + delta)
        else:
            out.append((event.type, delta if isinstance(delta, str) else ""))
    return out


def test_retrieve_stream_replays_the_stream_and_resumes_after_a_sequence_number(client, upstreams):
    upstreams[0].script(Reply(text="one two three"))
    live = list(client.responses.create(model="gpt-test", input="count", stream=True))
    response_id = live[0].response.id
    replayed = list(client.responses.retrieve(response_id, stream=True))
    for event in replayed:
        validate("ResponseStreamEvent", _wire(event))
    assert [e.sequence_number for e in replayed] == list(range(len(replayed)))
    assert _coalesced(replayed) == _coalesced(live)
    assert replayed[-1].response.output_text == "one two three" == live[-1].response.output_text
    tail = list(client.responses.retrieve(response_id, stream=True, starting_after=3))
    assert [e.sequence_number for e in tail] == list(range(4, len(replayed)))
    assert [_wire(e) for e in tail] == [_wire(e) for e in replayed[4:]]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.retrieve(response_id, stream=True, starting_after=-1)
    assert bad.value.param == "starting_after"
    assert client.responses.retrieve(response_id).output_text == "one two three"  # without stream: as before


def test_a_running_stream_is_followed_to_its_end_from_another_connection(client, upstreams):
    words = [f"w{i}" for i in range(12)]
    upstreams[0].script(Reply(text=" ".join(words), chunk_delay=0.15))  # about 1.7 s
    live = client.responses.create(model="gpt-test", input="go slowly", stream=True)
    live_events = iter(live)
    created = next(live_events)
    drained: list[Any] = []
    reader = threading.Thread(target=lambda: drained.extend(live_events), daemon=True)
    reader.start()
    follower = OpenAI(base_url=client.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)
    assert follower.responses.retrieve(created.response.id).status == "in_progress"
    started = time.monotonic()
    followed = list(follower.responses.retrieve(created.response.id, stream=True))
    reader.join(10)
    assert not reader.is_alive()
    for event in followed:
        validate("ResponseStreamEvent", _wire(event))
    assert [e.sequence_number for e in followed] == list(range(len(followed)))
    assert followed[-1].type == "response.completed"
    assert followed[-1].response.output_text == " ".join(words) == drained[-1].response.output_text
    assert _wire(followed[-1].response) == _wire(drained[-1].response)
    assert time.monotonic() - started > 1.0  # it waited for the live turn, not a snapshot


class Trip(BaseModel):
    city: str
    days: int


def test_parse_works_on_an_anthropic_model(client, upstreams):
    """responses.parse(text_format=...) sends a strict json_schema; Anthropic answers through the
    gateway's forced output tool, and the SDK gets a message it parses into the model."""
    from tests.fakes.anthropic_upstream import Reply as AnthropicReply

    anthropic = upstreams[1]
    for stream in (False, True):
        anthropic.script(AnthropicReply(text="", tool_calls=[
            {"id": "toolu_1", "name": "gateway_structured_output", "input": {"city": "Lisbon", "days": 4}}]))
        if stream:
            with client.responses.stream(model="claude", input="Plan a trip", text_format=Trip) as events:
                parsed = events.get_final_response().output_parsed
        else:
            parsed = client.responses.parse(model="claude", input="Plan a trip", text_format=Trip).output_parsed
        assert parsed == Trip(city="Lisbon", days=4)
        sent = anthropic.requests[-1].json
        assert sent["tool_choice"] == {"type": "tool", "name": "gateway_structured_output"}
        assert sent["tools"][0]["input_schema"]["required"] == ["city", "days"]
