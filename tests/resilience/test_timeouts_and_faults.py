"""Upstreams that are slow, stall, break off or talk nonsense: the client gets a clear status
before the stream starts, or `response.failed` after, and the upstream connection is closed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import ApiClient, sse_events
from tests.fakes.openai_upstream import Raw, Reply
from tests.providers.harness import Fakes, output_text

Configure = Callable[..., ApiClient]


@pytest.mark.parametrize("stream", [False, True])
def test_a_slow_first_byte_is_a_504_and_the_upstream_is_hung_up_on(configure: Configure, fakes: Fakes,
                                                                   stream: bool) -> None:
    api = configure({"first_byte_timeout": 0.3})
    fakes.chat.script(Reply(first_byte_delay=5))
    started = time.monotonic()
    response = api.create(model="chat-model", input="hi", stream=stream)
    assert response.status_code == 504
    assert time.monotonic() - started < 2
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert fakes.chat.last.client_disconnected.wait(2)
    assert len(fakes.chat.requests) == 1  # a timeout is not retried: it would only be slow again


def test_a_stall_mid_stream_fails_the_response_after_the_idle_timeout(configure: Configure, fakes: Fakes) -> None:
    api = configure({"idle_timeout": 0.3, "first_byte_timeout": 5})
    # role chunk + "one" + " two", then silence.
    fakes.chat.script(Reply(text="one two three four", stall_after=3))
    started = time.monotonic()
    events = sse_events(api.create(model="chat-model", input="hi", stream=True))
    assert time.monotonic() - started < 3
    assert events[-1]["type"] == "response.failed"
    assert "stalled" in events[-1]["response"]["error"]["message"]
    stored = api.get(f"/v1/responses/{events[-1]['response']['id']}").json()
    assert stored["status"] == "failed" and output_text(stored) == "one two"
    assert fakes.chat.last.client_disconnected.wait(2)


def test_the_total_timeout_bounds_a_stream_that_keeps_trickling(configure: Configure, fakes: Fakes) -> None:
    api = configure({"idle_timeout": 1, "total_timeout": 0.5})
    fakes.chat.script(Reply(text="a b c d e f g h i j k l", chunk_delay=0.2))
    started = time.monotonic()
    events = sse_events(api.create(model="chat-model", input="hi", stream=True))
    assert time.monotonic() - started < 2
    assert events[-1]["type"] == "response.failed"
    assert "total time" in events[-1]["response"]["error"]["message"]


def test_a_connection_reset_mid_stream_fails_the_response(configure: Configure, fakes: Fakes) -> None:
    api = configure()
    fakes.chat.script(Reply(text="one two three four", reset_after=3, chunk_delay=0.1))
    events = sse_events(api.create(model="chat-model", input="hi", stream=True))
    assert events[-1]["type"] == "response.failed"
    assert "broke off" in events[-1]["response"]["error"]["message"]
    assert api.get(f"/v1/responses/{events[-1]['response']['id']}").json()["status"] == "failed"


def test_malformed_json_from_the_upstream_is_a_502_not_retried(configure: Configure, fakes: Fakes) -> None:
    api = configure({"retry": {"max_retries": 2, "backoff": 0.01}})
    fakes.chat.script(Raw(200, b"{this is not json"))
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 502
    assert "not JSON" in response.json()["error"]["message"]
    assert len(fakes.chat.requests) == 1


def test_a_malformed_sse_event_before_any_content_is_a_502(configure: Configure, fakes: Fakes) -> None:
    api = configure({"retry": {"max_retries": 2, "backoff": 0.01}})
    fakes.chat.script(Raw(200, b"data: {\"choices\": [oops\n\n", content_type="text/event-stream", stream=True))
    response = api.create(model="chat-model", input="hi", stream=True)
    assert response.status_code == 502
    assert "malformed" in response.json()["error"]["message"]
    assert len(fakes.chat.requests) == 1
