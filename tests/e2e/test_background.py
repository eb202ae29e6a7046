"""Background responses under real gunicorn, with the openai SDK in strict mode: polling, a stream
left and resumed with `starting_after`, cancel, and the things that happen to real deployments: a
cancel served by another instance, a burst of background turns half of them cancelled, and the
worker running a background turn killed while another instance follows it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
import requests
from openai import OpenAI

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e]


def _config(upstream: FakeOpenAI) -> str:
    return f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", retry: {{max_retries: 0}}}}
models: [{{name: m, provider: openai}}]
"""


def _sdk(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


def _wire(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def _poll(client: OpenAI, response_id: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        time.sleep(0.2)
    raise AssertionError(f"{response_id} still running after {timeout} s")


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(upstream)) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess, upstream: FakeOpenAI) -> OpenAI:
    upstream.reset()
    return _sdk(gateway)


def test_create_in_the_background_and_poll(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text="Finished while you waited.", first_byte_delay=1.0))
    started = time.monotonic()
    created = client.responses.create(model="m", input="a long job", background=True)
    assert time.monotonic() - started < 1.0
    assert (created.status, created.background, created.output) == ("in_progress", True, [])
    done = _poll(client, created.id)
    validate("Response", _wire(done))
    assert (done.status, done.output_text, done.usage.input_tokens) == ("completed", "Finished while you waited.", 11)


def test_a_background_stream_left_midway_resumes_exactly_where_it_was(client: OpenAI, upstream: FakeOpenAI):
    words = [f"w{i}" for i in range(20)]
    upstream.script(Reply(text=" ".join(words), chunk_delay=0.05))
    seen: list[Any] = []
    with client.responses.create(model="m", input="go", background=True, stream=True) as stream:
        for event in stream:
            seen.append(event)
            if len(seen) == 6:
                break  # the client drops the connection here
    response_id = seen[0].response.id
    # Another connection (maybe another worker) picks up after the last event it got.
    rest: list[Any] = list(_sdk_for(client).responses.retrieve(response_id, stream=True,
                                                     starting_after=seen[-1].sequence_number))
    events = seen + rest
    for event in events:
        validate("ResponseStreamEvent", _wire(event))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == " ".join(words)
    assert events[-1].response.output_text == client.responses.retrieve(response_id).output_text


def _sdk_for(client: OpenAI) -> OpenAI:
    return OpenAI(base_url=str(client.base_url), api_key="sk-client", max_retries=0, _strict_response_validation=True)


def test_cancel_stops_the_turn_and_the_status_holds(client: OpenAI, upstream: FakeOpenAI):
    upstream.script(Reply(text=" ".join(f"w{i}" for i in range(100)), chunk_delay=0.1))
    created = client.responses.create(model="m", input="a very long job", background=True)
    _wait(lambda: len(upstream.requests) == 1)
    time.sleep(0.5)
    cancelled = client.responses.cancel(created.id)
    validate("Response", _wire(cancelled))
    assert cancelled.status == "cancelled"
    assert upstream.requests[0].client_disconnected.wait(5)  # the upstream call is dropped, not left running
    time.sleep(0.5)
    after = client.responses.retrieve(created.id)
    assert after.status == "cancelled" and len(after.output_text.split()) < 100
    assert client.responses.cancel(created.id).status == "cancelled"  # idempotent


def test_a_cancel_served_by_another_instance_stops_the_turn_within_a_second(upstream: FakeOpenAI):
    upstream.reset()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(100)), chunk_delay=0.1)
    try:
        with GatewayProcess(_config(upstream), workers=1) as a, \
                GatewayProcess(_config(upstream), workers=1, database_url=a.database_url) as b:
            created = _sdk(a).responses.create(model="m", input="long", background=True)
            _wait(lambda: len(upstream.requests) == 1)
            follower_events: list[Any] = []
            follower = threading.Thread(target=lambda: follower_events.extend(
                _sdk(b).responses.retrieve(created.id, stream=True)), daemon=True)
            follower.start()
            time.sleep(0.5)
            asked = time.monotonic()
            assert _sdk(b).responses.cancel(created.id).status == "cancelled"
            assert upstream.requests[0].client_disconnected.wait(5)
            stopped = time.monotonic() - asked
            follower.join(10)
            assert not follower.is_alive()  # B's follower (reading A's events through Redis) ended
            assert follower_events[0].type == "response.created"
            assert follower_events[-1].type not in ("response.completed", "response.incomplete")
            assert _sdk(a).responses.retrieve(created.id).status == "cancelled"
            print(f"\ncancel served by instance B stopped the upstream call on instance A in {stopped:.2f} s")
            assert stopped < 2.0
    finally:
        upstream.default_step = Reply()


def test_a_burst_of_background_turns_half_cancelled_all_settle(client: OpenAI, upstream: FakeOpenAI,
                                                               gateway: GatewayProcess):
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(30)), chunk_delay=0.05)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            ids = list(pool.map(lambda _: client.responses.create(model="m", input="x", background=True).id,
                                range(40)))
            list(pool.map(client.responses.cancel, ids[::2]))
            finals = list(pool.map(lambda response_id: _poll(client, response_id, timeout=30), ids))
        statuses = [final.status for final in finals]
        assert set(statuses[::2]) <= {"cancelled", "completed"}  # a cancel may arrive after the end
        assert statuses[::2].count("cancelled") >= 10
        assert set(statuses[1::2]) == {"completed"}
        # Ordinary requests still work (no connection, ticket or greenlet left behind).
        for _ in range(10):
            assert client.responses.create(model="m", input="hi").status == "completed"
        assert requests.get(f"{gateway.url}/ready", timeout=5).json()["status"] == "ready"
    finally:
        upstream.default_step = Reply()


@pytest.mark.slow
def test_a_background_turn_whose_worker_is_killed_is_settled_and_its_follower_told(upstream: FakeOpenAI):
    upstream.reset()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(300)), chunk_delay=0.1)  # ~30 s
    try:
        with GatewayProcess(_config(upstream), workers=1) as a, \
                GatewayProcess(_config(upstream), workers=1, database_url=a.database_url) as b:
            created = _sdk(a).responses.create(model="m", input="long", background=True)
            _wait(lambda: len(upstream.requests) == 1)
            followed: list[Any] = []
            follower = threading.Thread(target=lambda: followed.extend(
                _sdk(b).responses.retrieve(created.id, stream=True)), daemon=True)
            follower.start()
            time.sleep(1.0)
            assert a.proc is not None
            [worker] = psutil.Process(a.proc.pid).children()
            os.kill(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            follower.join(30)
            assert not follower.is_alive(), a.log()[-2000:]
            # A's new worker settled what the dead one left; B's follower ended with it.
            assert followed[-1].type == "response.incomplete", [e.type for e in followed[-3:]]
            assert [e.sequence_number for e in followed] == list(range(len(followed)))
            assert _sdk(b).responses.retrieve(created.id).status == "incomplete"
            print(f"\nworker running a background turn SIGKILLed: settled and its follower told in "
                  f"{time.monotonic() - killed:.1f} s")
            upstream.default_step = Reply()
            assert _sdk(a).responses.create(model="m", input="hi").status == "completed"
    finally:
        upstream.default_step = Reply()
