"""Chunked request bodies (no Content-Length) under real gunicorn: the whole body reaches the
view, and one over server.max_request_body_size is an OpenAI-style 413 (Anthropic's on /v1/messages)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess

pytestmark = pytest.mark.e2e

LIMIT = 65536
CONFIG = f"""
server: {{max_request_body_size: {LIMIT}}}
logging: {{format: text, level: warn}}
providers: {{demo: {{type: demo}}}}
models: [{{name: demo, provider: demo}}]
"""


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG, workers=1) as process:
        yield process


def _chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def _raw_post(gw: GatewayProcess, body: bytes, path: str = "/v1/responses") -> tuple[int, dict[str, str], bytes]:
    """POST over a bare socket with Transfer-Encoding: chunked and no Content-Length."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_a_raw_chunked_post_is_read_whole(gw):
    text = "hello from a chunked body, " * 20
    payload = json.dumps({"model": "demo", "input": text}).encode()
    pieces = [payload[i:i + 37] for i in range(0, len(payload), 37)]  # many small chunks
    status, _, content = _raw_post(gw, _chunked(pieces))
    assert status == 200, (content, gw.log())
    body = json.loads(content)
    assert body["status"] == "completed"
    assert text[:50] in body["output"][0]["content"][0]["text"]
    items = requests.get(f"{gw.base_url}/responses/{body['id']}/input_items", timeout=10).json()
    assert items["data"][0]["content"][0]["text"] == text


def test_requests_with_a_generator_body_works(gw):
    payload = json.dumps({"model": "demo", "input": "streamed from a generator", "stream": True}).encode()

    def pieces() -> Iterator[bytes]:
        yield from (payload[i:i + 10] for i in range(0, len(payload), 10))

    response = requests.post(f"{gw.base_url}/responses", data=pieces(),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert "event: response.completed" in response.text
    assert "streamed from a generator" in response.text


def test_a_chunked_body_over_the_limit_is_a_413(gw):
    payload = json.dumps({"model": "demo", "input": "x" * (LIMIT + 1000)}).encode()
    status, headers, content = _raw_post(gw, _chunked([payload[i:i + 8192] for i in range(0, len(payload), 8192)]))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert headers["x-should-retry"] == "false"
    assert json.loads(content) == {"error": {
        "message": "Request body is larger than the gateway accepts (server.max_request_body_size).",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}}


def test_on_the_messages_api_the_413_is_in_anthropics_shape(gw):
    payload = json.dumps({"model": "demo", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "x" * (LIMIT + 1000)}]}).encode()
    status, _, content = _raw_post(gw, _chunked([payload[i:i + 8192] for i in range(0, len(payload), 8192)]),
                                   path="/v1/messages")
    assert status == 413
    assert json.loads(content) == {"type": "error", "error": {
        "type": "request_too_large",
        "message": "Request body is larger than the gateway accepts (server.max_request_body_size)."}}


def test_a_chunked_body_of_exactly_the_limit_is_accepted(gw):
    empty = len(json.dumps({"model": "demo", "input": ""}))
    payload = json.dumps({"model": "demo", "input": "y" * (LIMIT - empty)}).encode()
    assert len(payload) == LIMIT
    status, _, content = _raw_post(gw, _chunked([payload[i:i + 8192] for i in range(0, len(payload), 8192)]))
    assert status == 200, content
    response_id = json.loads(content)["id"]
    items = requests.get(f"{gw.base_url}/responses/{response_id}/input_items", timeout=10).json()
    assert items["data"][0]["content"][0]["text"] == "y" * (LIMIT - empty)
