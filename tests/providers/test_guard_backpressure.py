"""The upstream guard reads at most BUFFERED events ahead of its consumer: a client that reads
slowly (a WebSocket or SSE reader with a full TCP window) stalls the upstream read instead of
growing the worker, and stopping the consumer ends the helper."""

from __future__ import annotations

import time
from collections.abc import Iterator

from responses_app.providers.base import Event, ProviderRequest, TextDelta
from responses_app.providers.guard import BUFFERED, _guarded
from responses_app.providers.http import Timeouts


class Endless:
    def __init__(self) -> None:
        self.produced = 0
        self.closed = False

    def __call__(self, request: ProviderRequest) -> Iterator[Event]:
        try:
            while True:
                self.produced += 1
                yield TextDelta("x")
        finally:
            self.closed = True


def _settle(upstream: Endless) -> int:
    """The count once the helper has stopped producing."""
    last = -1
    while last != upstream.produced:
        last = upstream.produced
        time.sleep(0.05)
    return last


def test_a_consumer_that_stops_reading_stalls_the_upstream_read():
    upstream = Endless()
    events = _guarded(upstream, ProviderRequest(model="m", items=[]), Timeouts(), "fake")
    assert isinstance(next(events), TextDelta)
    time.sleep(0.2)
    # One event consumed: the helper is at most BUFFERED (+ the one in hand) ahead, not unbounded.
    assert _settle(upstream) <= BUFFERED + 2
    for _ in range(100):
        next(events)
    assert _settle(upstream) <= BUFFERED + 102


def test_closing_the_consumer_ends_a_helper_waiting_for_room():
    upstream = Endless()
    events = _guarded(upstream, ProviderRequest(model="m", items=[]), Timeouts(), "fake")
    next(events)
    _settle(upstream)
    events.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 2
    while not upstream.closed:
        assert time.monotonic() < deadline, "the helper kept waiting after its consumer left"
        time.sleep(0.02)
