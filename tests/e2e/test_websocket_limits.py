"""The WebSocket mode's protections under real gunicorn, with short limits: the idle timeout (but
never while a response runs), the message size limit (1009), server pings and a client that never
answers them (1011), the connection age limit, and a worker shutdown (1001)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e]

IDLE = 2.0
AGE = 1.0


def _config(upstream: FakeOpenAI, **websocket: Any) -> str:
    options = {"idle_timeout": f"{IDLE}s", "ping_interval": "0.5s", "ping_timeout": "0.5s",
               "max_message_size": 4000, **websocket}
    inline = ", ".join(f"{k}: {v}" for k, v in options.items())
    return f"""
logging: {{format: text, level: warn}}
server: {{websocket: {{{inline}}}}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", retry: {{max_retries: 0}}}}
models: [{{name: m, provider: openai}}]
"""


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(_config(upstream), workers=1) as gw:
        yield gw


def _url(gw: GatewayProcess) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/responses"


def _closed_with(ws: Any, timeout: float) -> tuple[int, float]:
    """Read until the server closes; (its close code, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, time.monotonic() - started


def test_an_idle_connection_is_closed_but_never_while_a_response_runs(gateway, upstream):
    upstream.reset()
    upstream.script(Reply(text="slow answer", first_byte_delay=IDLE + 1.0))
    with connect(_url(gateway)) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "take your time"}))
        kinds: list[str] = []
        while not kinds or kinds[-1] != "response.completed":
            kinds.append(json.loads(ws.recv(timeout=10))["type"])
        # Pongs alone do not keep it open: IDLE after the response ended, it is closed.
        code, waited = _closed_with(ws, timeout=10)
    assert code == 1001 and IDLE - 0.5 < waited < IDLE + 1.5


def test_a_message_over_the_size_limit_closes_with_1009(gateway):
    with connect(_url(gateway)) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "x" * 5000}))
        code, _ = _closed_with(ws, timeout=5)
    assert code == 1009


def test_a_client_that_never_answers_pings_is_closed_with_1011(gateway):
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 101")
    data = data.split(b"\r\n\r\n", 1)[1]
    opcodes = []
    started = time.monotonic()
    while 0x8 not in opcodes:
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            data += sock.recv(4096)
        length = data[1] & 0x7F
        opcodes.append(data[0] & 0x0F)
        payload, data = data[2:2 + length], data[2 + length:]
    sock.close()
    assert opcodes[0] == 0x9  # the server pinged
    assert struct.unpack("!H", payload[:2])[0] == 1011  # and gave up when no pong came
    assert time.monotonic() - started < 3


def test_past_the_connection_age_a_create_is_refused_and_the_connection_closes(upstream):
    with GatewayProcess(_config(upstream, max_connection_age=f"{AGE}s"), workers=1) as gw, connect(_url(gw)) as ws:
        time.sleep(AGE + 0.3)
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "late"}))
        error = json.loads(ws.recv(timeout=5))
        assert error["type"] == "error" and error["error"]["code"] == "websocket_connection_limit_reached"
        assert error["status"] == 400
        code, _ = _closed_with(ws, timeout=5)
    assert code == 1001


def test_a_worker_shutting_down_closes_idle_connections_at_once_with_1001(upstream):
    with GatewayProcess(_config(upstream, idle_timeout="60s"), workers=1) as gw, connect(_url(gw)) as ws:
        upstream.reset()
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
        while json.loads(ws.recv(timeout=10))["type"] != "response.completed":
            pass
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGTERM)  # a deploy: gunicorn stops its workers gracefully
        code, waited = _closed_with(ws, timeout=10)
    assert code == 1001 and waited < 3  # not after the graceful timeout (turn_timeout + 30 s)
