"""Workers die (SIGKILL, OOM) and are stopped (deploys, max_requests recycling) with streams open:
every id a client saw in `response.created` still resolves, and a stopped worker cuts only the
streams that would outlive its graceful timeout, storing them `incomplete`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _config(upstream: FakeOpenAI) -> str:
    return f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1"}}
models: [{{name: m, provider: openai}}]
"""


class OpenStream:
    """A streaming request on a raw socket, read up to its `response.created`."""

    def __init__(self, port: int) -> None:
        body = json.dumps({"model": "m", "input": "a long story", "stream": True}).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.buffer = b""
        while b'"response.created"' not in self.buffer or b"\n\n" not in self.buffer.split(b'"response.created"')[1]:
            chunk = self.sock.recv(65536)
            assert chunk, self.buffer
            self.buffer += chunk
        line = next(line for line in self.buffer.split(b"\n") if b'"response.created"' in line)
        self.response_id: str = json.loads(line[6:])["response"]["id"]

    def rest(self, timeout: float) -> list[dict[str, Any]]:
        """Read until the server closes or ends the chunked body; the events received in all."""
        self.sock.settimeout(timeout)
        try:
            while not self.buffer.endswith(b"0\r\n\r\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buffer += chunk
        except OSError:
            pass
        finally:
            self.sock.close()
        return [json.loads(line[6:]) for line in self.buffer.split(b"\n") if line.startswith(b"data: {")]


@contextmanager
def _upstream(words: int, delay: float) -> Iterator[FakeOpenAI]:
    """A fake upstream whose every answer streams `words` words, `delay` seconds apart."""
    upstream = FakeOpenAI()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(words)), chunk_delay=delay)
    try:
        yield upstream
    finally:
        upstream.close()


def _open_streams(gw: GatewayProcess, count: int) -> list[OpenStream]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: OpenStream(gw.port), range(count)))


def _endings(streams: list[OpenStream]) -> list[list[dict[str, Any]]]:
    """Every stream read to its end: the events each received."""
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        return list(pool.map(lambda stream: stream.rest(timeout=15), streams))


def _status(gw: GatewayProcess, response_id: str) -> str:
    return str(requests.get(f"{gw.base_url}/responses/{response_id}", timeout=10).json().get("status"))


def _wait_settled(gw: GatewayProcess, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = {response_id: _status(gw, response_id) for response_id in ids}
        if "in_progress" not in statuses.values():
            break
        time.sleep(0.5)
    return statuses


def test_ids_from_a_sigkilled_worker_resolve_as_incomplete():
    with _upstream(60, 0.5) as upstream, GatewayProcess(_config(upstream), workers=1) as gw:  # ~30 s streams
        streams = _open_streams(gw, 20)
        ids = [stream.response_id for stream in streams]
        assert {_status(gw, response_id) for response_id in ids} == {"in_progress"}

        assert gw.proc is not None
        [worker] = psutil.Process(gw.proc.pid).children()
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        for stream in streams:
            stream.sock.close()
        # gunicorn starts a new worker; at boot it settles what the dead one left in progress.
        statuses = _wait_settled(gw, ids, timeout=20)
        assert set(statuses.values()) == {"incomplete"}, (statuses, gw.log()[-3000:])
        print(f"\nSIGKILL with {len(ids)} open streams: all {len(ids)} ids resolve as incomplete "
              f"{time.monotonic() - killed:.1f} s after the kill")
        assert requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "hi"},
                             timeout=30).status_code == 200


def test_a_sigterm_cuts_only_streams_longer_than_the_graceful_timeout_and_stores_them():
    with _upstream(60, 0.5) as upstream, GatewayProcess(  # ~30 s streams
            _config(upstream), workers=2, env={"GATEWAY_GRACEFUL_TIMEOUT": "4"}) as gw:
        streams = _open_streams(gw, 10)
        ids = [stream.response_id for stream in streams]
        started = time.monotonic()
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        endings = _endings(streams)
        elapsed = time.monotonic() - started
        assert gw.proc.wait(timeout=15) == 0
        # Each stream was told it ends here, shortly before the graceful timeout ran out.
        assert {events[-1]["type"] for events in endings} == {"response.incomplete"}, gw.log()[-3000:]
        assert 2 < elapsed < 5
        print(f"\nSIGTERM, graceful timeout 4 s, {len(ids)} streams of ~30 s: each ended with "
              f"response.incomplete {elapsed:.1f} s after the signal")
        texts = [events[-1]["response"]["output"][0]["content"][0]["text"] for events in endings]
        assert all(text.startswith("w0 w1") for text in texts)
        # And stored so: restart on the same database and read them back.
        with GatewayProcess(_config(upstream), workers=1, database_url=gw.database_url) as stored:
            statuses = {response_id: _status(stored, response_id) for response_id in ids}
        assert set(statuses.values()) == {"incomplete"}, statuses


def test_a_sigterm_lets_streams_within_their_timeouts_finish():
    # Default graceful timeout; ~3 s streams.
    with _upstream(8, 0.4) as upstream, GatewayProcess(_config(upstream), workers=1) as gw:
        streams = _open_streams(gw, 5)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        endings = _endings(streams)
        assert {events[-1]["type"] for events in endings} == {"response.completed"}, gw.log()[-3000:]
        assert gw.proc.wait(timeout=15) == 0


def test_max_requests_recycling_stores_the_streams_it_must_cut():
    with _upstream(60, 0.5) as upstream, GatewayProcess(  # ~30 s streams
            _config(upstream), workers=1, env={"GATEWAY_GRACEFUL_TIMEOUT": "4"},
            args=["--max-requests", "4", "--max-requests-jitter", "0"]) as gw:
        # The start-up health check and these three streams make four requests: the worker retires
        # (stops accepting and drains) as the third stream starts.
        streams = _open_streams(gw, 3)
        endings = _endings(streams)
        assert {events[-1]["type"] for events in endings} == {"response.incomplete"}, gw.log()[-3000:]
        # The replacement worker serves, and the cut turns are stored as what the clients were told.
        assert requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "hi"},
                             timeout=30).status_code == 200
        assert {_status(gw, stream.response_id) for stream in streams} == {"incomplete"}
