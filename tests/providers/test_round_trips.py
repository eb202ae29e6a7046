"""Every provider type, streamed and not: text, a tool-call round trip through previous_response_id,
usage taken from the upstream's own final numbers, and stop reasons mapped."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ApiClient
from tests.providers.harness import KINDS, UPSTREAM_MODEL, Fakes, expected_usage, final_response, output_text

TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

pytestmark = [pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"]),
              pytest.mark.parametrize("kind", list(KINDS))]


def test_it_answers_with_text_and_the_upstreams_usage(api: ApiClient, fakes: Fakes, kind: str, stream: bool) -> None:
    k = KINDS[kind]
    fake = k.fake(fakes)
    fake.script(k.text("Hi there, friend."))

    body = final_response(api.create(model=k.model, input="hello", stream=stream), stream)

    assert body["status"] == "completed"
    assert output_text(body) == "Hi there, friend."
    assert body["usage"] == expected_usage(k.usage)
    stored = api.get(f"/v1/responses/{body['id']}").json()
    assert stored["usage"] == body["usage"] and output_text(stored) == "Hi there, friend."
    # What the upstream was sent: the configured upstream model id and the user's words.
    assert k.upstream_model(fake.last) == UPSTREAM_MODEL[k.model]
    assert k.user_text(fake.last.json) == "hello"


def test_a_tool_call_round_trips_through_previous_response_id(api: ApiClient, fakes: Fakes, kind: str,
                                                             stream: bool) -> None:
    k = KINDS[kind]
    fake = k.fake(fakes)
    fake.script(k.tool_call("call_up_1", "get_weather", {"city": "Paris"}), k.text("Sunny in Paris."))

    first = final_response(api.create(model=k.model, input="Weather in Paris?", tools=[TOOL], stream=stream), stream)
    call = first["output"][-1]
    assert first["status"] == "completed"
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"]

    second = final_response(api.create(
        model=k.model, previous_response_id=first["id"], tools=[TOOL], stream=stream,
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]), stream)

    assert output_text(second) == "Sunny in Paris."
    k.sent_tool_round_trip(fake.last.json, call["call_id"], "get_weather", "sunny")


def test_a_length_cut_is_incomplete_with_max_output_tokens(api: ApiClient, fakes: Fakes, kind: str,
                                                           stream: bool) -> None:
    k = KINDS[kind]
    k.fake(fakes).script(k.length_cut)

    body = final_response(api.create(model=k.model, input="go on", stream=stream), stream)

    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert output_text(body) == "cut short"
    assert api.get(f"/v1/responses/{body['id']}").json()["status"] == "incomplete"


def test_the_next_call_reuses_the_upstream_connection(api: ApiClient, fakes: Fakes, kind: str, stream: bool) -> None:
    """A finished stream's body is read to its end (providers.http.drain), so its connection goes back
    to the pool: no new connection (DNS lookup, TCP or TLS handshake) per streamed answer."""
    k = KINDS[kind]
    fake = k.fake(fakes)
    fake.script(k.text("one"), k.text("two"), k.text("three"))
    for _ in range(3):
        assert final_response(api.create(model=k.model, input="hello", stream=stream), stream)["status"] == "completed"
    assert len({recorded.client_port for recorded in fake.requests}) == 1
