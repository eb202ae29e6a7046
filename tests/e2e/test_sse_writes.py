"""How a stream's frames go out under real gunicorn (issue 13): the frames the gateway has in hand
at once share one write (one HTTP chunk), and no frame waits for the upstream's next event.

The client reads the raw socket and decodes the chunked transfer encoding itself: each HTTP chunk
is one write of the gateway, timed as it arrives.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from tests.e2e.every_provider import config_yaml
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.e2e

PAUSE = 0.4  # between the upstream's chunks


def _writes(gw: GatewayProcess, path: str, body: dict[str, object]) -> list[tuple[float, bytes]]:
    """POST a stream over a bare socket; each HTTP chunk of the answer with when it was complete
    (seconds after the request was sent)."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        start = time.monotonic()
        sock.sendall(f"POST {path} HTTP/1.1\r\n".encode() + b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += reader.readline()
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        writes = []
        while size := int(reader.readline().strip(), 16):
            data = reader.read(size)
            assert reader.read(2) == b"\r\n"
            writes.append((time.monotonic() - start, data))
        return writes


def _types(data: bytes) -> list[str]:
    assert data.endswith(b"\n\n"), data  # whole frames only
    return [json.loads(frame.split(b"data: ", 1)[1])["type"] for frame in data.split(b"\n\n")[:-1]]


WORDS = ["alpha", "beta", "gamma", "delta"]


def _script(fakes: dict[str, FakeServer]) -> FakeOpenAI:
    upstream = fakes["chat"]
    assert isinstance(upstream, FakeOpenAI)
    # The upstream's chunks: the role, a word each, the finish, the usage; a pause after each.
    upstream.script(Reply(text=" ".join(WORDS), chunks=[f"{w} " for w in WORDS[:-1]] + [WORDS[-1]],
                          chunk_delay=PAUSE))
    return upstream


def _paced(writes: list[tuple[float, bytes]]) -> None:
    """No frame waited for the upstream's next chunk: each word's write came a pause after the one
    before it, not together with the next word (which the upstream sends a pause later)."""
    times = [at for at, _ in writes]
    for earlier, later in itertools.pairwise(times[:4]):
        assert PAUSE * 0.75 < later - earlier < PAUSE * 1.9, times


def test_the_frames_in_hand_share_a_write_and_none_waits_for_the_upstream(provider_gateway, provider_fakes):
    _script(provider_fakes)
    writes = _writes(provider_gateway, "/v1/responses", {"model": "chat-model", "input": "hi", "stream": True})
    types = [_types(data) for _, data in writes]
    # The opening events and the first word's (its item and part opened) in one write: the gateway
    # waits for the upstream's first event before it answers (a failure there is still an HTTP status).
    assert types[0] == ["response.created", "response.in_progress", "response.output_item.added",
                        "response.content_part.added", "response.output_text.delta"]
    # Every later word in a write of its own, as it comes.
    assert types[1:4] == [["response.output_text.delta"]] * 3
    # The end: what closes the item and the terminal event, in one write.
    assert types[4:] == [["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]]
    text = "".join(json.loads(frame.split(b"data: ", 1)[1])["delta"] for _, data in writes[:4]
                   for frame in data.split(b"\n\n")[:-1] if b"output_text.delta" in frame)
    assert text == " ".join(WORDS)
    _paced(writes)


@pytest.mark.parametrize(("path", "body", "first", "last"), [
    # The role chunk and the first word's; the finish chunk and [DONE].
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 2, 2),
    # message_start, ping, content_block_start, the first delta; content_block_stop, message_delta, message_stop.
    ("/v1/messages", {"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}, 4, 3),
], ids=["chat-completions", "messages"])
def test_every_surface_writes_what_it_has_in_hand_at_once(provider_gateway, provider_fakes, path, body, first, last):
    _script(provider_fakes)
    writes = _writes(provider_gateway, path, {**body, "model": "chat-model", "stream": True})
    counts = [data.count(b"\n\n") for _, data in writes]
    assert all(data.endswith(b"\n\n") for _, data in writes)
    assert counts == [first, 1, 1, 1, last], [data for _, data in writes]
    _paced(writes)


def test_a_streams_row_is_written_beside_the_upstream_call_and_announced_only_once_written(provider_gateway,
                                                                                          provider_fakes):
    """The `in_progress` row is written while the upstream works on its first answer (not before
    calling it), and `response.created` still goes out only once the row is there: the opening write
    of a follow-up counts the turn into its conversation, so holding that row's lock holds the write."""
    upstream = provider_fakes["chat"]
    assert isinstance(upstream, FakeOpenAI)
    upstream.reset()
    upstream.script(Reply(text="First."), Reply(text="Second."))
    parent = requests.post(f"{provider_gateway.base_url}/responses", json={"model": "chat-model", "input": "one"},
                           timeout=10).json()["id"]
    hold = 0.6
    with psycopg.connect(provider_gateway.database_url) as lock:
        lock.execute("SELECT 1 FROM conversations_app_conversation WHERE id = (SELECT conversation_id FROM "
                     "conversations_app_storedresponse WHERE id = %s) FOR UPDATE", [parent])
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            body = {"model": "chat-model", "input": "two", "previous_response_id": parent, "stream": True}
            stream = pool.submit(_writes, provider_gateway, "/v1/responses", body)
            while len(upstream.requests) < 2:  # the upstream is called while the write waits for the lock
                assert time.monotonic() - started < 5, "the upstream was not called while the write was held"
                time.sleep(0.01)
            time.sleep(hold - (time.monotonic() - started))
            lock.rollback()  # the write goes on
            writes = stream.result(timeout=10)
    assert writes[0][0] >= hold * 0.9, writes[0]  # nothing was announced before the row was written
    assert _types(writes[0][1])[0] == "response.created"
    assert _types(writes[-1][1])[-1] == "response.completed"
    response_id = json.loads(writes[0][1].split(b"data: ", 1)[1].split(b"\n\n")[0])["response"]["id"]
    stored = requests.get(f"{provider_gateway.base_url}/responses/{response_id}", timeout=10).json()
    assert stored["status"] == "completed" and stored["previous_response_id"] == parent


# --- keep-alives while the upstream is silent mid-stream -----------------------------------------
# Each keep-alive goes out in an HTTP chunk of its own, between the event writes and never inside
# one, on every surface, and is counted in the response's size.

KEEPALIVE = 0.2
SILENCE = 1.0  # the upstream's pause before each chunk: several keep-alives each


@pytest.fixture(scope="module")
def keepalive_gateway(provider_fakes: dict[str, FakeServer]) -> Iterator[GatewayProcess]:
    config = config_yaml(provider_fakes) + f"""
server: {{sse_keepalive: {KEEPALIVE}s}}
observability: {{enabled: true, metrics: {{enabled: true, path: /metrics}}}}
"""
    with GatewayProcess(config, workers=1) as gw:
        yield gw


@pytest.mark.parametrize(("path", "body", "keepalive"), [
    ("/v1/responses", {"input": "hi"}, b": keep-alive\n\n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, b": keep-alive\n\n"),
    ("/v1/messages", {"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
     b'event: ping\ndata: {"type":"ping"}\n\n'),
], ids=["responses", "chat-completions", "messages"])
def test_a_silent_upstream_mid_stream_gets_keep_alives_of_their_own_between_the_events(
        keepalive_gateway, provider_fakes, path, body, keepalive):
    upstream = provider_fakes["chat"]
    assert isinstance(upstream, FakeOpenAI)
    upstream.script(Reply(text="alpha beta", chunks=["alpha ", "beta"], chunk_delay=SILENCE))
    before = _response_bytes(keepalive_gateway, path)
    writes = _writes(keepalive_gateway, path, {**body, "model": "chat-model", "stream": True})
    # The first write is the opening one, the view's answer, which waited for the upstream's first
    # event: a keep-alive during that wait goes out with it (here one, as the role chunk comes
    # after SILENCE).
    beats = [at for at, data in writes[1:] if data == keepalive]
    events = [data for _, data in writes[1:] if data != keepalive]
    # After it, nothing else is written on its own, and no keep-alive went into another write.
    assert all(keepalive not in data and data.endswith(b"\n\n") for data in events), writes
    # The upstream is silent for SILENCE before each of its chunks (role, alpha, beta, finish,
    # usage): about SILENCE / KEEPALIVE keep-alives each time after the first.
    assert len(beats) >= 4 * (SILENCE / KEEPALIVE - 2), [at for at, _ in writes]
    for earlier, later in itertools.pairwise(beats):
        assert later - earlier > KEEPALIVE * 0.5, beats
    text = b"".join(events)
    assert b"alpha" in text and b"beta" in text
    ended = {"/v1/responses": b"response.completed", "/v1/chat/completions": b"data: [DONE]",
             "/v1/messages": b"message_stop"}[path]
    assert ended in events[-1]
    if path == "/v1/responses":
        frames = [json.loads(frame.split(b"data: ", 1)[1]) for _, data in writes for frame in data.split(b"\n\n")[:-1]
                  if frame != keepalive.removesuffix(b"\n\n")]
        assert [frame["sequence_number"] for frame in frames] == list(range(len(frames)))
    # The keep-alives written beside the stream are counted in its size.
    assert _response_bytes(keepalive_gateway, path) - before == sum(len(data) for _, data in writes)


def test_a_client_gone_while_the_upstream_is_silent_mid_stream_ends_the_turn_and_the_upstream_call(
        keepalive_gateway, provider_fakes):
    upstream = provider_fakes["chat"]
    assert isinstance(upstream, FakeOpenAI)
    upstream.reset()
    upstream.script(Reply(text="alpha beta gamma", stall_after=2, stall_seconds=30))
    payload = json.dumps({"model": "chat-model", "input": "hi", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", keepalive_gateway.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        received = b""
        while received.count(b": keep-alive") < 2:  # under way, and the upstream silent
            data = sock.recv(65536)
            assert data, received  # the gateway ended the stream
            received += data
    assert upstream.last.client_disconnected.wait(5), "the upstream call was not ended"
    response_id = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    deadline = time.monotonic() + 5
    while (stored := requests.get(f"{keepalive_gateway.base_url}/responses/{response_id}", timeout=10).json())[
            "status"] == "in_progress":
        assert time.monotonic() < deadline, stored
        time.sleep(0.05)
    assert stored["status"] == "incomplete"
    assert "Traceback" not in keepalive_gateway.log()


def _response_bytes(gw: GatewayProcess, path: str) -> float:
    """http_response_size_bytes' sum for `path`'s route so far."""
    text = requests.get(f"http://127.0.0.1:{gw.port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("http_response_size_bytes_sum{") and f'path="{path}"' in line)
