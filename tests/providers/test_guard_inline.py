"""A non-streamed answer is read by the request itself (guard._inline), under the same limits and
token as a stream's helper: a timer cancels the attempt when its limit passes, the request's token
(the client gone, a shutdown) cancels it too, and either shuts the read down, which is then
reported as the timeout or the cancellation it was. `concurrency.call_later`, its timer, is
checked under gevent too, as gunicorn's workers run it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from responses_app.cancellation import Cancelled, CancelToken
from responses_app.providers.base import Event, ProviderError, ProviderRequest, TextDelta
from responses_app.providers.guard import GuardedProvider, _inline
from responses_app.providers.http import Timeouts
from tests.e2e.gunicorn import ROOT


class Upstream:
    """Answers after `delay` seconds, or fails as http.post does when the token shuts its read
    down first (a reset, mapped to a retryable upstream error)."""

    def __init__(self, delay: float = 0.0, *, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.tokens: list[CancelToken] = []

    def __call__(self, request: ProviderRequest) -> Iterator[Event]:
        self.tokens.append(request.cancel)
        assert request.heartbeat is None
        if request.cancel.sleep(self.delay):
            raise ProviderError("upstream", "Could not reach provider 'fake'.", retryable=True)
        if self.error is not None:
            raise self.error
        yield TextDelta("one")
        yield TextDelta(" two")


def read(upstream: Upstream, request: ProviderRequest, timeouts: Timeouts) -> list[Event]:
    return list(_inline(upstream, request, timeouts, "fake"))


def test_an_answer_comes_back_whole_on_an_attempt_token_of_its_own() -> None:
    upstream = Upstream(0.05)
    request = ProviderRequest(model="m", items=[], heartbeat=5.0)
    assert read(upstream, request, Timeouts(first_byte=0.3)) == [TextDelta("one"), TextDelta(" two")]
    (attempt,) = upstream.tokens
    assert attempt is not request.cancel
    time.sleep(0.4)  # past the limit: its timer was stopped with the call, and the attempt let go
    assert not attempt.cancelled and not request.cancel.cancelled
    request.cancel.cancel("shutdown")
    assert not attempt.cancelled  # released: the request's token no longer reaches it


@pytest.mark.parametrize(("timeouts", "message"), [
    (Timeouts(first_byte=0.2), "did not answer in time"),
    (Timeouts(first_byte=5.0, total=0.2), "exceeded the total time"),
])
def test_a_limit_that_passes_shuts_the_read_and_is_a_timeout(timeouts: Timeouts, message: str) -> None:
    upstream = Upstream(10)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=message) as raised:
        read(upstream, ProviderRequest(model="m", items=[]), timeouts)
    assert raised.value.kind == "timeout"
    assert time.monotonic() - started < 1.5
    assert upstream.tokens[0].cancelled


def test_the_turns_own_deadline_bounds_it_too() -> None:
    upstream = Upstream(10)
    with pytest.raises(ProviderError, match="exceeded the total time"):
        read(upstream, ProviderRequest(model="m", items=[], deadline=time.monotonic() + 0.2), Timeouts())
    with pytest.raises(ProviderError, match="exceeded the total time"):
        read(upstream, ProviderRequest(model="m", items=[], deadline=time.monotonic() - 1), Timeouts())
    assert len(upstream.tokens) == 1  # a deadline already past does not call the upstream at all


def test_the_request_cancelled_meanwhile_is_a_cancellation_not_an_upstream_error() -> None:
    upstream = Upstream(10)
    request = ProviderRequest(model="m", items=[])
    threading.Timer(0.1, request.cancel.cancel, ["client_disconnected"]).start()
    started = time.monotonic()
    with pytest.raises(Cancelled) as raised:
        read(upstream, request, Timeouts())
    assert raised.value.reason == "client_disconnected"
    assert time.monotonic() - started < 1.5


def test_a_failure_of_its_own_is_passed_on_unchanged() -> None:
    failure = ProviderError("rate_limited", "Provider 'fake' is rate limited.")
    with pytest.raises(ProviderError) as raised:
        read(Upstream(error=failure), ProviderRequest(model="m", items=[]), Timeouts())
    assert raised.value is failure


def test_generate_and_streams_without_heartbeats_go_inline_and_other_streams_keep_their_helper() -> None:
    threads: list[str] = []

    class Inner:
        key, entry, type = "fake", SimpleNamespace(connect_timeout=5.0, effective_first_byte_timeout=5.0,
                                                   effective_idle_timeout=5.0, total_timeout=5.0), "openai"

        def answer(self, request: ProviderRequest) -> Iterator[Event]:
            threads.append(threading.current_thread().name)
            yield TextDelta("x")

        generate = stream = answer

    guarded = GuardedProvider(Inner())  # type: ignore[arg-type]
    list(guarded.generate(ProviderRequest(model="m", items=[], heartbeat=5.0)))
    list(guarded.stream(ProviderRequest(model="m", items=[])))  # WebSocket mode, a background turn
    list(guarded.stream(ProviderRequest(model="m", items=[], heartbeat=5.0)))  # SSE: keep-alives
    here = threading.current_thread().name
    assert threads[:2] == [here, here]
    assert threads[2] != here


CALL_LATER_UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
import time
from gateway_project.concurrency import call_later
fired = []
def slow(name):
    time.sleep(0.01)  # a greenlet of its own: it may block, which a hub callback may not
    fired.append(name)
call_later(0.05, slow, 'kept')
stop = call_later(0.05, slow, 'stopped')
stop()
time.sleep(0.2)
print(fired)
"""


def test_call_later_under_gevent() -> None:
    done = subprocess.run([sys.executable, "-c", CALL_LATER_UNDER_GEVENT], cwd=ROOT,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "['kept']"
