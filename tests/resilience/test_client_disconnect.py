"""A client that hangs up mid-stream, or while a non-streamed answer is awaited, under real gunicorn
gevent workers: the gateway closes the upstream connection within a second and stores the
response `incomplete` with what it had."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeServer]]:
    servers: dict[str, FakeServer] = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def gateway(upstreams: dict[str, FakeServer]) -> Iterator[GatewayProcess]:
    config = f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: sk-x, endpoint: "{upstreams['openai'].url}/v1", idle_timeout: 60s}}
  anthropic: {{type: anthropic, api_key: sk-y, endpoint: "{upstreams['anthropic'].url}", idle_timeout: 60s}}
models:
  - {{name: chat-model, provider: openai}}
  - {{name: claude, provider: anthropic}}
"""
    with GatewayProcess(config) as gw:
        yield gw


def _stream_until_text(gw: GatewayProcess, model: str, want: str) -> tuple[socket.socket, str]:
    """POST a streaming request on a raw socket and read until `want` has been streamed; return the
    still-open socket and the response id."""
    body = json.dumps({"model": model, "input": "tell me a long story", "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen += sock.recv(65536)
        text = "".join(json.loads(line[6:])["delta"] for line in seen.decode(errors="replace").split("\n")
                       if line.startswith("data: ") and '"response.output_text.delta"' in line)
        if text == want:
            response_id = json.loads(next(line[6:] for line in seen.decode().split("\n")
                                          if '"response.created"' in line))["response"]["id"]
            return sock, response_id
    raise AssertionError(f"never saw {want!r}: {seen!r}")


def _stored(gw: GatewayProcess, response_id: str) -> dict[str, Any]:
    # The turn exists in_progress from the start and is settled by the worker as it unwinds; poll
    # its public state briefly.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = requests.get(f"{gw.base_url}/responses/{response_id}", timeout=5)
        if response.status_code == 200 and response.json()["status"] != "in_progress":
            return response.json()
        time.sleep(0.05)
    raise AssertionError(f"{response_id} was never settled:\n{gw.log()}")


@pytest.mark.parametrize(("model", "upstream", "step", "usage"), [
    ("chat-model", "openai", Reply(text="one two three four", stall_after=3, stall_seconds=20), None),
    # message_start, ping, block start, "one", " two", then silence; message_start said 13 input tokens.
    ("claude", "anthropic", anth.Reply(text="one two three four", stall_after=5, stall_seconds=20), 13),
])
def test_a_client_hang_up_closes_the_upstream_and_stores_an_incomplete_turn(
        gateway: GatewayProcess, upstreams: dict[str, FakeServer], model: str, upstream: str, step: Any,
        usage: int | None) -> None:
    fake = upstreams[upstream]
    fake.reset()
    fake.script(step)
    sock, response_id = _stream_until_text(gateway, model, "one two")

    sock.close()
    closed_at = time.monotonic()
    assert fake.last.client_disconnected.wait(5), gateway.log()
    assert time.monotonic() - closed_at < 1.0

    stored = _stored(gateway, response_id)
    assert stored["status"] == "incomplete"
    assert stored["output"][0]["content"][0]["text"] == "one two"
    if usage is None:
        assert stored.get("usage") is None
    else:
        assert stored["usage"]["input_tokens"] == usage
    # Hanging up is ordinary: nothing in the worker's log looks like a crash.
    assert "Traceback" not in gateway.log(), gateway.log()


def test_a_client_that_stays_gets_the_whole_stream_and_can_reuse_the_connection(
        gateway: GatewayProcess, upstreams: dict[str, FakeServer]) -> None:
    fake = upstreams["openai"]
    fake.reset()
    fake.script(Reply(text="all of it", chunk_delay=0.05))
    with requests.Session() as session:
        streamed = session.post(f"{gateway.base_url}/responses", timeout=10,
                                json={"model": "chat-model", "input": "hi", "stream": True})
        assert streamed.status_code == 200
        assert '"type":"response.completed"' in streamed.text
        # The same keep-alive connection serves the next request: the watcher left nothing behind.
        again = session.post(f"{gateway.base_url}/responses", json={"model": "chat-model", "input": "more"}, timeout=10)
        assert again.status_code == 200, gateway.log()
    assert not fake.requests[0].client_disconnected.is_set()


def test_a_client_that_hangs_up_on_a_non_streamed_answer_frees_the_upstream_at_once(
        gateway: GatewayProcess, upstreams: dict[str, FakeServer]) -> None:
    # The request waits on the upstream itself (guard._inline): its client watch cancels the call's
    # token, which shuts the upstream read down; nothing is thrown into the request.
    fake = upstreams["openai"]
    fake.reset()
    fake.script(Reply(text="too late", first_byte_delay=20))
    newest = "SELECT status, interrupted FROM conversations_app_storedresponse " \
             "WHERE created_at > %s ORDER BY created_at DESC LIMIT 1"
    with psycopg.connect(gateway.database_url) as conn:
        (since,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
    body = json.dumps({"model": "chat-model", "input": "think hard"}).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    deadline = time.monotonic() + 10
    while not fake.requests:
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.02)
    sock.close()
    closed_at = time.monotonic()
    assert fake.last.client_disconnected.wait(5), gateway.log()
    assert time.monotonic() - closed_at < 1.0
    with psycopg.connect(gateway.database_url) as conn:
        deadline = time.monotonic() + 5
        while (row := conn.execute(newest, [since]).fetchone()) is None:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
    assert row == ("incomplete", "client_gone")
    fake.script(Reply(text="fine"))
    after = requests.post(f"{gateway.base_url}/responses", json={"model": "chat-model", "input": "hi"}, timeout=10)
    assert after.status_code == 200 and after.json()["output"][0]["content"][0]["text"] == "fine"
    assert "Traceback" not in gateway.log(), gateway.log()
