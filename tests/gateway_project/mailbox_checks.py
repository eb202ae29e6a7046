"""What the upstream guard's mailbox must do, written once and run twice by test_mailbox.py: in
the test process (threads) and in a gevent-patched interpreter, as under gunicorn's workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from gateway_project import concurrency
from responses_app.cancellation import CancelToken
from responses_app.providers.base import Event, Heartbeat, ProviderError, ProviderRequest, TextDelta
from responses_app.providers.guard import BUFFERED, _guarded
from responses_app.providers.http import Timeouts
from tests.gevent_checks import run_patched


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # gevent's sleep once patched: lets the helper run


def items_come_in_order_and_a_wait_ends_with_the_first_put() -> None:
    box = concurrency.mailbox(4)
    box.put(1)
    box.put(2)
    assert (box.get(1.0), box.get(1.0)) == (1, 2)
    def later() -> None:
        _sleep(0.05)
        box.put(3)

    concurrency.start(later)
    started = time.monotonic()
    assert box.get(5.0) == 3
    assert time.monotonic() - started < 1.0


def a_wait_with_nothing_put_ends_after_its_timeout() -> None:
    box = concurrency.mailbox(4)
    started = time.monotonic()
    try:
        box.get(0.2)
    except concurrency.Empty:
        pass
    else:
        raise AssertionError("nothing was put")
    waited = time.monotonic() - started
    assert 0.18 <= waited < 1.0, waited
    box.put("late")  # a put after a timed-out wait is kept for the next one
    assert box.get(0.0) == "late"


def the_helper_waits_for_room_until_unblocked() -> None:
    box = concurrency.mailbox(2)
    produced: list[int] = []

    def helper() -> None:
        for i in range(5):
            box.wait_for_room()
            box.put(i)
            produced.append(i)

    concurrency.start(helper)
    _sleep(0.1)
    assert produced == [0, 1]  # two ahead, then it waits
    assert box.get(1.0) == 0
    _sleep(0.1)
    assert produced == [0, 1, 2]
    box.unblock()
    _sleep(0.1)
    assert produced == [0, 1, 2, 3, 4]


def _request(cancel: CancelToken | None = None, heartbeat: float | None = None) -> ProviderRequest:
    return ProviderRequest(model="m", items=[], heartbeat=heartbeat, cancel=cancel or CancelToken())


def _upstream(pauses: list[float], count: int | None = None) -> Callable[[ProviderRequest], Iterator[Event]]:
    def call(request: ProviderRequest) -> Iterator[Event]:
        for i, pause in enumerate(pauses if count is None else [0.0] * count):
            _sleep(pause)
            yield TextDelta(f"w{i}")
    return call


def the_guard_relays_a_slow_stream_in_order() -> None:
    events = list(_guarded(_upstream([0.01] * 20), _request(), Timeouts(), "p"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [f"w{i}" for i in range(20)]


def the_guard_beats_while_the_upstream_is_silent_then_times_out_idle() -> None:
    timeouts = Timeouts(first_byte=5.0, idle=0.5, total=10.0)
    started = time.monotonic()
    seen: list[str] = []
    try:
        for event in _guarded(_upstream([0.0, 10.0]), _request(heartbeat=0.15), timeouts, "p"):
            seen.append("beat" if isinstance(event, Heartbeat) else "text")
    except ProviderError as error:
        assert error.kind == "timeout" and "stalled" in error.message, error
    else:
        raise AssertionError("no idle timeout")
    took = time.monotonic() - started
    assert seen[0] == "text" and 2 <= seen.count("beat") <= 4, seen
    assert 0.45 <= took < 1.5, took


def a_cancel_ends_a_helper_that_waits_for_room() -> None:
    token = CancelToken()
    produced: list[int] = []

    def endless(request: ProviderRequest) -> Iterator[Event]:
        i = 0
        try:
            while True:
                produced.append(i)
                yield TextDelta("x")
                i += 1
        finally:
            produced.append(-1)  # closed

    events = _guarded(endless, _request(cancel=token), Timeouts(), "p")
    next(events)
    _sleep(0.1)
    assert BUFFERED <= len(produced) <= BUFFERED + 3, len(produced)  # stalled BUFFERED ahead
    token.cancel("client_gone")
    _sleep(0.1)
    assert produced[-1] == -1  # the helper saw the cancel and closed the upstream
    events.close()  # type: ignore[attr-defined]  # a generator


CHECKS = [items_come_in_order_and_a_wait_ends_with_the_first_put, a_wait_with_nothing_put_ends_after_its_timeout,
          the_helper_waits_for_room_until_unblocked, the_guard_relays_a_slow_stream_in_order,
          the_guard_beats_while_the_upstream_is_silent_then_times_out_idle, a_cancel_ends_a_helper_that_waits_for_room]


if __name__ == "__main__":
    run_patched(CHECKS)
