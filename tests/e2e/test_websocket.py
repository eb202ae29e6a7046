"""The WebSocket mode on /v1/responses under real gunicorn, driven by the openai SDK's own
`client.responses.connect()`; every server event is validated strictly against the SDK's
`ResponsesServerEvent` and the spec file."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.contract import validate
from tests.e2e.gunicorn import ROOT, GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.steps import Fail

pytestmark = [pytest.mark.e2e]

TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def _config(upstream: FakeOpenAI) -> str:
    return f"""
logging: {{format: json, level: info}}
observability: {{enabled: true, metrics: {{enabled: true}}}}
auth: {{enabled: true}}
rate_limit: {{enabled: true, requests_per_minute: 100000, redis_key_prefix: "test:ws:{secrets.token_hex(4)}:"}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", retry: {{max_retries: 0}}}}
models: [{{name: m, provider: openai}}]
"""


def _create_key(gw: GatewayProcess, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", "ws", "--owner", "acme", *args],
                          cwd=ROOT, env=gw.env(), check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(upstream), env={"REDIS_URL": "redis://127.0.0.1:6379/0"}) as gw:
        yield gw


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return _create_key(gateway)


@pytest.fixture
def client(gateway: GatewayProcess, upstream: FakeOpenAI, key: str) -> OpenAI:
    upstream.reset()
    return OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, _strict_response_validation=True)


class Events:
    """Reads a connection's server events, each validated strictly as it arrives."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.seen: list[dict[str, Any]] = []

    def next(self, timeout: float = 15.0) -> dict[str, Any]:
        raw = self.connection._connection.recv(timeout=timeout)
        event = json.loads(raw)
        validate("ResponsesServerEvent", event)
        self.connection.parse_event(raw)  # and the SDK's own parsing takes it
        self.seen.append(event)
        return event

    def until_terminal(self, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Events up to and including the `count`-th terminal event (or error)."""
        events: list[dict[str, Any]] = []
        while count:
            event = self.next(timeout)
            events.append(event)
            if event["type"] in TERMINAL:
                count -= 1
        return events


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def _user_texts(request_body: dict[str, Any]) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
            for m in request_body["messages"] if m["role"] == "user"]


def test_one_response(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="Hello over a socket."))
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="hi")
        events = Events(connection).until_terminal()
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all("stream_id" not in e for e in events)
    assert _text(events) == "Hello over a socket."
    stored = client.responses.retrieve(events[-1]["response"]["id"])
    assert stored.output_text == "Hello over a socket." and stored.status == "completed"


def test_three_sequential_responses_chain_on_one_socket(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="one"), Reply(text="two"), Reply(text="three"))
    with client.responses.connect() as connection:
        events = Events(connection)
        previous = None
        for word in ("first", "second", "third"):
            connection.response.create(model="m", input=word, previous_response_id=previous)
            done = events.until_terminal()[-1]
            assert done["type"] == "response.completed"
            previous = done["response"]["id"]
    assert _user_texts(upstream.requests[-1].json) == ["first", "second", "third"]
    assert [m["content"] for m in upstream.requests[-1].json["messages"] if m["role"] == "assistant"] == ["one", "two"]


def _chain_reads(gateway: GatewayProcess) -> float:
    """Chains read back from Postgres so far, over every worker: `conversation_operations_total`
    of the `get` operation."""
    text = requests.get(f"{gateway.url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "conversation_operations_total" and sample.labels.get("operation") == "get")


def test_a_stored_chain_is_continued_from_the_connections_memory_and_stored_whole(
        client: OpenAI, upstream: FakeOpenAI, gateway: GatewayProcess):
    upstream.script(Reply(text="one"), Reply(text="two"), Reply(text="three"), Reply(text="four"), Reply(text="five"))
    reads = _chain_reads(gateway)
    ids: list[str] = []
    with client.responses.connect() as connection:
        events = Events(connection)
        for word in ("first", "second", "third"):
            connection.response.create(model="m", input=word, previous_response_id=ids[-1] if ids else None)
            done = events.until_terminal()[-1]
            assert done["type"] == "response.completed"
            ids.append(done["response"]["id"])
        # Each turn continued the lane's latest response from memory: no chain was read back.
        assert _chain_reads(gateway) == reads
        assert _user_texts(upstream.requests[-1].json) == ["first", "second", "third"]
        # An older response of this connection is not its lane's latest: it is read from Postgres.
        connection.response.create(model="m", input="fork", previous_response_id=ids[0], stream_id="b")
        assert events.until_terminal()[-1]["type"] == "response.completed"
        assert _chain_reads(gateway) == reads + 1
        assert _user_texts(upstream.requests[-1].json) == ["first", "fork"]
    # The turns were stored as one chain: HTTP continues it from Postgres with the whole history.
    for response_id, previous in zip(ids, [None, *ids[:-1]], strict=True):
        assert client.responses.retrieve(response_id).previous_response_id == previous
    client.responses.create(model="m", input="fourth", previous_response_id=ids[-1])
    assert _user_texts(upstream.requests[-1].json) == ["first", "second", "third", "fourth"]
    assert [m["content"] for m in upstream.requests[-1].json["messages"] if m["role"] == "assistant"] == [
        "one", "two", "three"]


def test_a_remembered_response_whose_chain_was_purged_is_not_found_and_the_socket_goes_on(
        client: OpenAI, upstream: FakeOpenAI, gateway: GatewayProcess):
    upstream.script(Reply(text="kept"), Reply(text="fresh"))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="q")
        first = events.until_terminal()[-1]["response"]["id"]
        time.sleep(1.1)
        subprocess.run([sys.executable, "manage.py", "purge_conversations", "--older-than", "1s"], cwd=ROOT,
                       env=gateway.env(), check=True, capture_output=True)
        assert requests.get(f"{client.base_url}responses/{first}", timeout=5,
                            headers={"Authorization": f"Bearer {client.api_key}"}).status_code == 404
        connection.response.create(model="m", input="more", previous_response_id=first)
        error = events.next()
        assert error["type"] == "error" and error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        connection.response.create(model="m", input="from scratch")
        assert events.until_terminal()[-1]["type"] == "response.completed"
    # The purge is found out by the opening write, made beside the upstream call (pipeline.open_stream),
    # so that call may have been made, and was cut off; the next turn is a new chain.
    assert _user_texts(upstream.requests[-1].json) == ["from scratch"]


def test_a_store_false_continuation_sends_only_new_input_and_the_upstream_gets_everything(client: OpenAI,
                                                                                        upstream: FakeOpenAI):
    upstream.script(Reply(text="A."), Reply(text="B."))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="question one", store=False)
        first = events.until_terminal()[-1]["response"]
        connection.response.create(model="m", input="question two", store=False, previous_response_id=first["id"])
        second = events.until_terminal()[-1]
    assert second["type"] == "response.completed"
    assert second["response"]["previous_response_id"] == first["id"]
    assert _user_texts(upstream.requests[-1].json) == ["question one", "question two"]
    # Nothing was stored: over HTTP the first response does not exist.
    assert requests.get(f"{client.base_url}responses/{first['id']}",
                        headers={"Authorization": f"Bearer {client.api_key}"}, timeout=5).status_code == 404


def test_a_new_connection_starts_with_an_empty_cache(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="A."), Reply(text="again"))
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="q", store=False)
        first = Events(connection).until_terminal()[-1]["response"]["id"]
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="more", store=False, previous_response_id=first)
        error = events.next()
        assert error["type"] == "error" and error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"
        # The connection stays open for the next request.
        connection.response.create(model="m", input="from scratch", store=False)
        assert events.until_terminal()[-1]["type"] == "response.completed"
    assert len(upstream.requests) == 2


def test_a_failed_continuation_evicts_the_entry_it_referenced(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="A."), Fail(500))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="q", store=False)
        first = events.until_terminal()[-1]["response"]["id"]
        connection.response.create(model="m", input="next", store=False, previous_response_id=first)
        failed = events.next()
        assert failed["type"] == "error" and failed["status"] >= 500
        connection.response.create(model="m", input="next", store=False, previous_response_id=first)
        again = events.next()
        assert again["type"] == "error" and again["error"]["code"] == "previous_response_not_found"
    assert len(upstream.requests) == 2


def test_auth_is_refused_at_the_upgrade(gateway: GatewayProcess):
    bad = OpenAI(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(InvalidStatus) as refused, bad.responses.connect():
        pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"


def test_lanes_run_concurrently_fifo_within_each_and_a_lane_forks(client: OpenAI, upstream: FakeOpenAI):
    slow = " ".join(f"w{i}" for i in range(6))
    upstream.script(Reply(text=slow, chunk_delay=0.15), Reply(text=slow, chunk_delay=0.15),
                    Reply(text="second on a"), Reply(text="forked"))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="lane a", store=False, stream_id="a")
        connection.response.create(model="m", input="lane b", stream_id="b")
        connection.response.create(model="m", input="a again", store=False, stream_id="a")
        seen = events.until_terminal(3)
        order = [(e.get("stream_id"), e["type"]) for e in seen]
        # Both lanes started before either finished: they ran side by side.
        first_end = min(i for i, (_, kind) in enumerate(order) if kind == "response.completed")
        assert {("a", "response.created"), ("b", "response.created")} <= set(order[:first_end])
        # Within lane a, the second response starts only after the first ended.
        a_events = [e for e in seen if e.get("stream_id") == "a"]
        a_kinds = [e["type"] for e in a_events]
        assert a_kinds.index("response.completed") < len(a_kinds) - 1 - a_kinds[::-1].index("response.created")
        assert all(e.get("stream_id") in ("a", "b") for e in seen)
        a_latest = [e for e in a_events if e["type"] == "response.completed"][-1]["response"]["id"]
        # A new lane forks from lane a's latest (unstored) response.
        connection.response.create(model="m", input="fork", store=False, stream_id="c", previous_response_id=a_latest)
        fork = events.until_terminal()
    assert fork[-1]["type"] == "response.completed" and fork[-1]["stream_id"] == "c"
    assert _user_texts(upstream.last.json) == ["a again", "fork"]


def test_a_steer_ends_the_response_at_a_boundary_and_the_gateway_starts_its_successor(client: OpenAI,
                                                                                      upstream: FakeOpenAI):
    call = {"id": "call_1", "name": "lookup", "arguments": '{"q": "weather"}'}
    upstream.script(Reply(text="Let me look that up.", tool_calls=[call], chunk_delay=0.3),
                    Reply(text="Sure, in Celsius."))
    tools: list[Any] = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="weather?", tools=tools, instructions="Be brief.")
        created = events.next()
        assert created["type"] == "response.created"
        first = created["response"]["id"]
        while events.next()["type"] != "response.output_text.delta":
            pass
        connection.response.steer(previous_response_id=first, input="Use Celsius.")
        seen = events.until_terminal(2)
    kinds = [e["type"] for e in seen]
    accepted = next(e for e in seen if e["type"] == "response.steer.accepted")
    assert accepted["steer"]["previous_response_id"] == first and accepted["steer"]["id"].startswith("steer_")
    steered = next(e for e in seen if e["type"] == "response.incomplete")
    assert steered["response"]["id"] == first
    assert steered["response"]["incomplete_details"] == {"reason": "steered"}
    assert [item["type"] for item in steered["response"]["output"]] == ["message"]  # the call never started
    successor = seen[kinds.index("response.incomplete") + 1]
    assert successor["type"] == "response.created"
    assert successor["response"]["previous_response_id"] == first
    assert successor["response"]["instructions"] == "Be brief."  # it inherits the settings
    assert seen[-1]["type"] == "response.completed" and _text(seen[kinds.index("response.created"):]) == \
        "Sure, in Celsius."
    # The upstream's first call was closed; the second got the whole context plus the steering input.
    assert upstream.requests[0].client_disconnected.wait(2)
    assert _user_texts(upstream.requests[1].json) == ["weather?", "Use Celsius."]
    assert client.responses.retrieve(first).status == "incomplete"


def test_a_steer_while_a_tool_call_is_pending_waits_for_the_client_tool_output(client: OpenAI,
                                                                               upstream: FakeOpenAI):
    call = {"id": "call_9", "name": "lookup", "arguments": '{"q": "' + "x" * 40 + '"}'}
    upstream.script(Reply(text="", tool_calls=[call], chunk_delay=0.3), Reply(text="Done."))
    tools: list[Any] = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.create(model="m", input="go", tools=tools)
        first = events.next()["response"]["id"]
        while events.next()["type"] != "response.output_item.added":
            pass
        steering: Any = [{"role": "user", "content": "and hurry"}]
        connection.response.steer(previous_response_id=first, input=steering)
        seen = events.until_terminal()
        assert seen[-1]["type"] == "response.completed"
        pending = events.next()
        assert pending["type"] == "response.steer.pending"
        assert pending["reason"] == "waiting_for_required_input"
        assert pending["required_input"] == [{"type": "function_call_output", "call_id": "call_9", "name": "lookup"}]
        connection.response.create(model="m", previous_response_id=first, tools=tools,
                                   input=[{"type": "function_call_output", "call_id": "call_9", "output": "42"}])
        done = events.until_terminal()
    assert done[-1]["type"] == "response.completed"
    body = upstream.requests[1].json
    roles = [m["role"] for m in body["messages"]]
    # The tool output stays right after the call (every provider requires it); the steering follows.
    assert roles[-3:] == ["assistant", "tool", "user"]
    assert _user_texts(body)[-1] == "and hurry"


def test_steers_that_cannot_apply_fail_with_their_input_given_back(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="done"))
    with client.responses.connect() as connection:
        events = Events(connection)
        connection.response.steer(previous_response_id="resp_unknown", input="hello")
        failed = events.next()
        assert failed["type"] == "response.steer.failed" and failed["error"]["code"] == "response_not_found"
        assert failed["steer"] == {"previous_response_id": "resp_unknown", "input": "hello"}
        connection.response.create(model="m", input="hi")
        finished = events.until_terminal()[-1]["response"]["id"]
        connection.response.steer(previous_response_id=finished, input="late")
        late = events.next()
        assert late["error"]["code"] == "response_already_completed"
        connection._connection.send(json.dumps({"type": "response.steer", "previous_response_id": finished,
                                                "input": [{"role": "assistant", "content": "no"}]}))
        invalid = events.next()
        assert invalid["error"]["code"] == "invalid_input" and "id" not in invalid["steer"]
        assert json.loads(invalid["steer"]["input"]) == [{"role": "assistant", "content": "no"}]


def test_bad_client_events_get_error_events_and_the_connection_stays_open(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="still here"))
    with client.responses.connect() as connection:
        events = Events(connection)
        raw = connection._connection
        cases = [
            ("{not json", None, None),
            (json.dumps({"type": "session.update"}), "type", "invalid_value"),
            (json.dumps({"type": "response.create", "model": "m", "input": "x", "background": True}), "background",
             "unsupported_parameter"),
            (json.dumps({"type": "response.create", "model": "m", "input": "x", "stream_id": "bad id!"}), "stream_id",
             "invalid_stream_id"),
            (json.dumps({"type": "response.create", "model": "m"}), "input", "missing_required_parameter"),
            (json.dumps({"type": "response.create", "model": "nope", "input": "x"}), "model", None),
        ]
        for text, param, code in cases:
            raw.send(text)
            error = events.next()
            assert error["type"] == "error" and 400 <= error["status"] < 500, error
            if param is not None:
                assert error["error"]["param"] == param
            if code is not None:
                assert error["error"]["code"] == code
        connection.response.create(model="m", input="ok")
        assert _text(events.until_terminal()) == "still here"
    assert len(upstream.requests) == 1


def test_a_rate_limited_create_is_an_error_event_and_the_socket_stays_open(gateway: GatewayProcess,
                                                                          upstream: FakeOpenAI):
    upstream.reset()
    limited = OpenAI(base_url=gateway.base_url, api_key=_create_key(gateway, "--rpm", "2"), max_retries=0)
    with limited.responses.connect() as connection:
        events = Events(connection)
        for _ in range(2):
            connection.response.create(model="m", input="hi")
            last = events.until_terminal()[-1]
            assert last["type"] == "response.completed", last
        connection.response.create(model="m", input="one too many", stream_id="x")
        refused = events.next()
        assert refused["type"] == "error" and refused["status"] == 429 and refused["stream_id"] == "x"
        assert refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["error"]["headers"]["x-ratelimit-limit-requests"] == "2"
        connection._connection.send(json.dumps({"type": "nonsense"}))
        assert events.next()["error"]["code"] == "invalid_value"  # still served
    assert len(upstream.requests) == 2


def test_a_client_that_drops_mid_response_closes_the_upstream_and_the_turn_is_stored_incomplete(
        client: OpenAI, upstream: FakeOpenAI, gateway: GatewayProcess, key: str):
    upstream.script(Reply(text=" ".join(f"w{i}" for i in range(60)), chunk_delay=0.1))
    ws = ws_connect(gateway.url.replace("http://", "ws://") + "/v1/responses",
                    additional_headers={"Authorization": f"Bearer {key}"})
    ws.send(json.dumps({"type": "response.create", "model": "m", "input": "talk"}))
    response_id = json.loads(ws.recv(timeout=10))["response"]["id"]
    while json.loads(ws.recv(timeout=10))["type"] != "response.output_text.delta":
        pass
    dropped = time.monotonic()
    ws.socket.shutdown(socket.SHUT_RDWR)  # gone, no closing handshake
    ws.socket.close()
    assert upstream.requests[-1].client_disconnected.wait(5)
    assert time.monotonic() - dropped < 1.5
    deadline = time.monotonic() + 10
    while (stored := client.responses.retrieve(response_id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert stored.status == "incomplete" and 0 < len(stored.output_text.split()) < 60


def test_every_response_is_logged_and_counted_with_its_own_request_id(client: OpenAI, upstream: FakeOpenAI,
                                                                      gateway: GatewayProcess):
    upstream.script(Reply(text="a"), Reply(text="b"))
    with client.responses.connect() as connection:
        events = Events(connection)
        ids = []
        for _ in range(2):
            connection.response.create(model="m", input="x")
            ids.append(events.until_terminal()[-1]["response"]["id"])
    time.sleep(0.5)
    lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    per_response = [line for line in lines if line.get("method") == "WEBSOCKET" and line.get("response_id") in ids]
    assert len(per_response) == 2 and len({line["request_id"] for line in per_response}) == 2
    assert all(line["status"] == 200 and line["connection_id"] for line in per_response)
    metrics = requests.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'http_requests_total{method="WEBSOCKET",path="/v1/responses",status="200"}' in metrics
    assert "gateway_websocket_connections" in metrics


def test_open_authenticated_sockets_hold_no_database_connection(upstream: FakeOpenAI):
    """The upgrade reads the API key from Postgres; the socket must give that connection back to the
    pool, or each open socket would hold one for its whole life: with a pool of 2, a third socket's
    upgrade (and every stored response) would wait for a connection that never comes."""
    upstream.reset()
    config = _config(upstream).replace("rate_limit: {enabled: true", "rate_limit: {enabled: false")
    with GatewayProcess(config, workers=1, env={"DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "2",
                                                "DB_POOL_BUSY_TIMEOUT": "3"}) as gw:
        key = _create_key(gw)
        url = gw.url.replace("http://", "ws://") + "/v1/responses"
        sockets = [ws_connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=5)
                   for _ in range(5)]
        try:
            upstream.script(*(Reply(text="ok") for _ in range(3)))
            for ws in sockets[-2:]:
                ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
                while (event := json.loads(ws.recv(timeout=10)))["type"] not in TERMINAL:
                    pass
                assert event["type"] == "response.completed", event
            answer = requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "hi"},
                                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert answer.status_code == 200, answer.text
        finally:
            for ws in sockets:
                ws.close()
