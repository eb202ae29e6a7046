"""The per-provider circuit breaker: opens on a failure ratio, fails fast while open, recovers
through half-open probes, and exports its state and transitions to Prometheus."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from tests.conftest import ApiClient
from tests.fakes.openai_upstream import Fail, Reply
from tests.providers.harness import Fakes
from tests.resilience.conftest import FakeClock

Configure = Callable[..., ApiClient]
BREAKER: dict[str, Any] = {"retry": {"max_retries": 0},
           "circuit_breaker": {"min_requests": 2, "failure_ratio": 0.5, "window": "30s", "open_duration": "10s",
                               "half_open_probes": 1}}


def _state(provider: str = "openai", model: str = "gpt-upstream") -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"provider": provider, "model": model})


def _transitions(frm: str, to: str, provider: str = "openai", model: str = "gpt-upstream") -> float:
    return REGISTRY.get_sample_value("circuit_breaker_state_transitions_total",
                                     {"provider": provider, "model": model, "from": frm, "to": to}) or 0.0


def test_it_opens_fails_fast_and_recovers(configure: Configure, fakes: Fakes, clock: FakeClock) -> None:
    api = configure(BREAKER)
    before = {(f, t): _transitions(f, t) for f, t in
              [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]}
    fakes.chat.script(Fail(500), Fail(500))
    assert api.create(model="chat-model", input="1").status_code == 502
    assert _state() == 0
    assert api.create(model="chat-model", input="2").status_code == 502
    assert _state() == 1

    # Open: 503 at once, the upstream is not called.
    response = api.create(model="chat-model", input="3", stream=True)
    assert response.status_code == 503
    assert "circuit breaker open" in response.json()["error"]["message"]
    assert len(fakes.chat.requests) == 2

    # After open_duration one probe goes through; its success closes the breaker.
    clock.now += 11
    fakes.chat.script(Reply(text="back"))
    assert api.create(model="chat-model", input="4").status_code == 200
    assert _state() == 0
    assert len(fakes.chat.requests) == 3
    for (frm, to), count in before.items():
        assert _transitions(frm, to) == count + 1, (frm, to)


def test_a_failed_probe_opens_it_again(configure: Configure, fakes: Fakes, clock: FakeClock) -> None:
    api = configure(BREAKER)
    fakes.chat.script(Fail(500), Fail(500), Fail(503))
    api.create(model="chat-model", input="1")
    api.create(model="chat-model", input="2")
    clock.now += 11
    assert api.create(model="chat-model", input="probe").status_code == 503  # upstream's own 503
    assert _state() == 1
    assert api.create(model="chat-model", input="fast").status_code == 503
    assert len(fakes.chat.requests) == 3


def test_client_errors_do_not_trip_it(configure: Configure, fakes: Fakes) -> None:
    api = configure(BREAKER)
    fakes.chat.script(*[Fail(400, "bad input", type="invalid_request_error")] * 4)
    for _ in range(4):
        assert api.create(model="chat-model", input="x").status_code == 400
    assert _state() == 0
    assert api.create(model="chat-model", input="y").status_code == 200


def test_while_open_the_fallback_answers_without_calling_the_primary(configure: Configure, fakes: Fakes) -> None:
    api = configure(BREAKER, models=[
        {"name": "chat-model", "provider": "openai", "fallbacks": ["claude"]},
        {"name": "claude", "provider": "anthropic"},
    ])
    fakes.chat.script(Fail(500), Fail(500))
    assert api.create(model="chat-model", input="1").status_code == 200  # primary fails, fallback answers
    assert api.create(model="chat-model", input="2").status_code == 200
    assert _state(model="chat-model") == 1
    response = api.create(model="chat-model", input="3")
    assert response.status_code == 200
    assert len(fakes.chat.requests) == 2 and len(fakes.anthropic.requests) == 3


def test_an_open_breaker_switches_off_one_model_not_the_whole_provider(configure: Configure, fakes: Fakes) -> None:
    api = configure(BREAKER, models=[
        {"name": "chat-model", "provider": "openai", "provider_model_id": "gpt-upstream"},
        {"name": "other-model", "provider": "openai", "provider_model_id": "gpt-other"},
    ])
    fakes.chat.script(Fail(500), Fail(500))
    api.create(model="chat-model", input="1")
    api.create(model="chat-model", input="2")
    assert _state() == 1
    assert api.create(model="chat-model", input="3").status_code == 503
    # The same provider entry still serves its other models.
    fakes.chat.script(Reply(text="fine"))
    assert api.create(model="other-model", input="4").status_code == 200
    assert _state(model="gpt-other") == 0


def test_it_needs_a_minimum_volume_before_it_opens(configure: Configure, fakes: Fakes) -> None:
    api = configure({**BREAKER, "circuit_breaker": {**BREAKER["circuit_breaker"], "min_requests": 5}})
    fakes.chat.script(*[Fail(500)] * 4)
    for number in range(4):
        assert api.create(model="chat-model", input=str(number)).status_code == 502
    assert _state() == 0  # 4 failures of 4, but fewer calls than min_requests
    fakes.chat.script(Fail(500))
    api.create(model="chat-model", input="5")
    assert _state() == 1


def test_a_requests_retries_count_once(configure: Configure, fakes: Fakes) -> None:
    api = configure({**BREAKER, "retry": {"max_retries": 2, "backoff": 0.01}})
    fakes.chat.script(*[Fail(500)] * 3)
    assert api.create(model="chat-model", input="1").status_code == 502
    assert len(fakes.chat.requests) == 3
    assert _state() == 0  # three failed attempts, but one request: below min_requests (2)
    fakes.chat.script(*[Fail(500)] * 3)
    api.create(model="chat-model", input="2")
    assert _state() == 1
