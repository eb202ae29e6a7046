"""A stream with no heartbeats is read by its consumer itself (guard._streamed_inline), under the
limits and token a helper's stream has: written once and run twice by test_guard_streamed_inline.py,
with threads (the test client, manage.py) and in a gevent-patched interpreter (gunicorn's workers).

The fake upstream waits on its attempt's token as http.post's read does: a token set meanwhile
shuts the read down, which http.post reports as a broken-off answer (or, `clean_end`, as an answer
that simply ended)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from responses_app.cancellation import Cancelled, CancelToken
from responses_app.providers.base import Event, ProviderError, ProviderRequest, TextDelta
from responses_app.providers.guard import ABANDONED, _streamed_inline
from responses_app.providers.http import Timeouts
from tests.gevent_checks import run_patched


class Upstream:
    """Yields one event after each pause; records where it ran and whether it was closed."""

    def __init__(self, pauses: list[float], *, clean_end: bool = False) -> None:
        self.pauses = pauses
        self.clean_end = clean_end
        self.tokens: list[CancelToken] = []
        self.threads: list[int] = []
        self.closed = False

    def __call__(self, request: ProviderRequest) -> Iterator[Event]:
        self.tokens.append(request.cancel)
        self.threads.append(threading.get_ident())
        try:
            for index, pause in enumerate(self.pauses):
                if request.cancel.sleep(pause):
                    if self.clean_end:
                        return
                    raise ProviderError("upstream", "Provider 'fake' broke off the answer.", retryable=True)
                yield TextDelta(f"w{index}")
        finally:
            self.closed = True


def _read(upstream: Upstream, timeouts: Timeouts, request: ProviderRequest | None = None,
          *, hold: float = 0.0) -> list[str]:
    """The texts read, holding each event `hold` seconds (a consumer writing to a slow client)."""
    texts = []
    for event in _streamed_inline(upstream, request or ProviderRequest(model="m", items=[]), timeouts, "fake"):
        assert isinstance(event, TextDelta)
        texts.append(event.text)
        time.sleep(hold)
    return texts


def _fails(upstream: Upstream, timeouts: Timeouts, message: str, request: ProviderRequest | None = None) -> float:
    """Seconds until the read failed with a timeout saying `message`."""
    started = time.monotonic()
    try:
        _read(upstream, timeouts, request)
    except ProviderError as error:
        assert error.kind == "timeout" and message in error.message, error
    else:
        raise AssertionError(f"no timeout ({message})")
    assert upstream.tokens[0].cancelled and upstream.closed
    return time.monotonic() - started


def a_stream_is_read_in_order_by_its_consumer() -> None:
    upstream = Upstream([0.01] * 20)
    request = ProviderRequest(model="m", items=[])
    assert _read(upstream, Timeouts(), request) == [f"w{i}" for i in range(20)]
    assert upstream.threads == [threading.get_ident()]  # no helper: the consumer's own thread
    (attempt,) = upstream.tokens
    assert attempt is not request.cancel and not attempt.cancelled
    request.cancel.cancel("shutdown")
    assert not attempt.cancelled  # released once the stream ended


def a_silent_upstream_is_a_first_byte_timeout() -> None:
    took = _fails(Upstream([10.0]), Timeouts(first_byte=0.2, idle=5.0), "did not answer in time")
    assert 0.18 <= took < 1.5, took


def a_stall_after_the_first_events_is_an_idle_timeout() -> None:
    took = _fails(Upstream([0.0, 0.05, 10.0]), Timeouts(first_byte=5.0, idle=0.3), "stalled mid-stream")
    assert 0.3 <= took < 1.5, took


def a_consumer_slower_than_the_idle_limit_is_not_a_stall() -> None:
    # Each event is held twice the idle limit: the upstream waits on the consumer, not the reverse.
    upstream = Upstream([0.0] * 3)
    assert _read(upstream, Timeouts(first_byte=5.0, idle=0.3), hold=0.6) == ["w0", "w1", "w2"]
    assert not upstream.tokens[0].cancelled


def a_stream_that_keeps_trickling_is_bounded_by_total_and_by_the_turns_deadline() -> None:
    took = _fails(Upstream([0.05] * 100), Timeouts(idle=1.0, total=0.4), "exceeded the total time")
    assert 0.38 <= took < 1.5, took
    late = ProviderRequest(model="m", items=[], deadline=time.monotonic() + 0.3)
    _fails(Upstream([0.05] * 100), Timeouts(), "exceeded the total time", late)
    unasked = Upstream([0.0])
    try:
        _read(unasked, Timeouts(), ProviderRequest(model="m", items=[], deadline=time.monotonic() - 1))
    except ProviderError as error:
        assert error.kind == "timeout"
    else:
        raise AssertionError("a deadline already past read the upstream")
    assert unasked.tokens == []  # not called at all


def an_answer_that_ends_because_its_read_was_shut_down_is_not_a_short_answer() -> None:
    _fails(Upstream([0.0, 10.0], clean_end=True), Timeouts(first_byte=5.0, idle=0.2), "stalled mid-stream")


def the_request_cancelled_meanwhile_is_a_cancellation() -> None:
    request = ProviderRequest(model="m", items=[])
    timer = threading.Timer(0.1, request.cancel.cancel, ["client_disconnected"])
    timer.start()
    started = time.monotonic()
    try:
        _read(Upstream([0.0, 10.0]), Timeouts(), request)
    except Cancelled as stop:
        assert stop.reason == "client_disconnected"
    else:
        raise AssertionError("not cancelled")
    assert time.monotonic() - started < 1.5


def a_consumer_that_stops_reading_closes_the_upstream() -> None:
    upstream = Upstream([0.0] * 10)
    events = _streamed_inline(upstream, ProviderRequest(model="m", items=[]), Timeouts(), "fake")
    assert next(events) == TextDelta("w0")
    events.close()  # type: ignore[attr-defined]  # a generator
    assert upstream.closed and upstream.tokens[0].reason == ABANDONED


CHECKS = [a_stream_is_read_in_order_by_its_consumer, a_silent_upstream_is_a_first_byte_timeout,
          a_stall_after_the_first_events_is_an_idle_timeout, a_consumer_slower_than_the_idle_limit_is_not_a_stall,
          a_stream_that_keeps_trickling_is_bounded_by_total_and_by_the_turns_deadline,
          an_answer_that_ends_because_its_read_was_shut_down_is_not_a_short_answer,
          the_request_cancelled_meanwhile_is_a_cancellation, a_consumer_that_stops_reading_closes_the_upstream]


if __name__ == "__main__":
    run_patched(CHECKS)
