"""Retries (only before the first event), Retry-After, and fallback models."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from conversations_app.models import StoredResponse
from tests.conftest import ApiClient, sse_events
from tests.fakes import anthropic_upstream as anth
from tests.fakes.openai_upstream import Fail, Reply
from tests.providers.harness import Fakes, output_text

Configure = Callable[..., ApiClient]
RETRY = {"retry": {"max_retries": 2, "backoff": 0.01, "max_backoff": 0.05}}


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: connections are refused


@pytest.mark.parametrize("stream", [False, True])
def test_a_500_then_success_is_retried_and_the_client_never_sees_the_500(configure: Configure, fakes: Fakes,
                                                                         stream: bool) -> None:
    api = configure(RETRY)
    fakes.chat.script(Fail(500, "boom"), Reply(text="second time lucky"))
    response = api.create(model="chat-model", input="hi", stream=stream)
    assert response.status_code == 200
    body = response.json() if not stream else sse_events(response)[-1]["response"]
    assert output_text(body) == "second time lucky"
    assert len(fakes.chat.requests) == 2


def test_retries_give_up_after_max_retries_with_a_502(configure: Configure, fakes: Fakes) -> None:
    api = configure(RETRY)
    fakes.chat.script(Fail(502), Fail(503), Fail(500))
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 502
    assert len(fakes.chat.requests) == 3


def test_a_429_is_retried_after_its_retry_after(configure: Configure, fakes: Fakes) -> None:
    api = configure(RETRY)
    fakes.chat.script(Fail(429, "slow down", headers={"Retry-After": "1"}), Reply(text="ok now"))
    started = time.monotonic()
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 200 and output_text(response.json()) == "ok now"
    assert time.monotonic() - started >= 1.0
    assert len(fakes.chat.requests) == 2


def test_a_429_with_a_long_retry_after_reaches_the_client_with_retry_after(configure: Configure,
                                                                          fakes: Fakes) -> None:
    api = configure({"retry": {"max_retries": 2, "max_retry_after": 5}})
    fakes.chat.script(Fail(429, "slow down", headers={"Retry-After": "30"}))
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(fakes.chat.requests) == 1


def test_an_upstream_400_is_neither_retried_nor_sent_to_a_fallback(configure: Configure, fakes: Fakes) -> None:
    api = configure(RETRY, models=[
        {"name": "chat-model", "provider": "openai", "fallbacks": ["claude"]},
        {"name": "claude", "provider": "anthropic"},
    ])
    fakes.chat.script(Fail(400, "This model's maximum context length is 128000 tokens.", type="invalid_request_error"))
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "This model's maximum context length is 128000 tokens."
    assert len(fakes.chat.requests) == 1 and fakes.anthropic.requests == []


def test_an_anthropic_error_before_any_content_is_retried(configure: Configure, fakes: Fakes) -> None:
    # message_start (usage only), then `error: overloaded_error`: nothing reached the client yet.
    api = configure(anthropic=RETRY)
    fakes.anthropic.script(anth.Reply(error_after=1), anth.Reply(text="fine"))
    events = sse_events(api.create(model="claude", input="hi", stream=True))
    assert events[-1]["type"] == "response.completed" and output_text(events[-1]["response"]) == "fine"
    assert len(fakes.anthropic.requests) == 2


def test_a_failure_after_the_first_event_is_not_retried(configure: Configure, fakes: Fakes) -> None:
    api = configure(RETRY)
    fakes.chat.script(Reply(text="one two three", drop_after=3))
    events = sse_events(api.create(model="chat-model", input="hi", stream=True))
    assert events[-1]["type"] == "response.failed"
    assert len(fakes.chat.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_the_fallback_model_answers_when_the_primary_fails(configure: Configure, fakes: Fakes, stream: bool) -> None:
    api = configure(RETRY, models=[
        {"name": "chat-model", "provider": "openai", "provider_model_id": "gpt-upstream", "fallbacks": ["claude"],
         "pricing": {"input": 1000, "output": 1000}},
        {"name": "claude", "provider": "anthropic", "provider_model_id": "claude-upstream",
         "pricing": {"input": 3, "output": 15}},
    ])
    fakes.chat.script(Fail(500), Fail(500), Fail(500))
    fakes.anthropic.script(anth.Reply(text="Claude here."))
    response = api.create(model="chat-model", input="hi", stream=stream)
    assert response.status_code == 200
    body = response.json() if not stream else sse_events(response)[-1]["response"]
    assert output_text(body) == "Claude here." and body["model"] == "chat-model"
    assert len(fakes.chat.requests) == 3  # the primary had its retries first
    assert fakes.anthropic.last.json["model"] == "claude-upstream"
    stored = StoredResponse.objects.get(id=body["id"])
    assert stored.provider == "anthropic"
    # Priced as the model that answered, not the one asked for.
    reply = anth.Reply()
    expected = (reply.input_tokens * 3 + reply.output_tokens * 15) / 1_000_000
    assert stored.cost_usd is not None and float(stored.cost_usd) == pytest.approx(expected)


def test_connection_errors_are_retried_then_fall_back(configure: Configure, fakes: Fakes) -> None:
    api = configure({"endpoint": f"http://127.0.0.1:{_dead_port()}/v1", **RETRY}, models=[
        {"name": "chat-model", "provider": "openai", "fallbacks": ["gemini"]},
        {"name": "gemini", "provider": "google", "provider_model_id": "gemini-upstream"},
    ])
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 200
    assert output_text(response.json()) == "Hello from the fake Gemini."


def test_with_no_fallback_an_unreachable_upstream_is_a_502(configure: Configure) -> None:
    api = configure({"endpoint": f"http://127.0.0.1:{_dead_port()}/v1", **RETRY})
    response = api.create(model="chat-model", input="hi")
    assert response.status_code == 502
    assert "Could not reach provider 'openai'" in response.json()["error"]["message"]
