"""The upstream guard: an SSE stream's upstream call runs in a helper, and the request waits on its events.

Why: a request that blocks inside an upstream socket read can only be stopped by throwing into
it, and a throw can land anywhere, including inside a database call (which left pooled Postgres
connections mid-query for good). Here the request only ever waits on a mailbox, with a timeout, so:

- the four timeouts are plain clock checks: no first event within `first_byte_timeout`, a gap
  longer than `idle_timeout`, or past `total_timeout` (or the turn's own deadline) — the attempt is
  abandoned with a `ProviderError("timeout")`;
- cancellation is a token: the client watcher or a shutdown sets it, the token closes the upstream
  read (see http.post) and wakes the waiting request, which raises `Cancelled` where it waits;
- a silent upstream (a model thinking before its first token) yields `Heartbeat`s, which the SSE
  path sends as comments so load balancers do not cut the stream.

The helper is a greenlet under gevent and a thread elsewhere (gateway_project.concurrency); it
runs in a copy of the caller's context, so the provider span is current for its outgoing request.
An abandoned helper ends as soon as its read is shut down (http.post arranges that, before the
response headers as after them); the socket timeouts are only a safety net, and a streamed body
has none (http._untimed).

A non-streamed answer (`generate`, and the calls that are not answers: a token count, a compaction)
needs no helper: it is one wait for one whole body, with no heartbeats and one limit (first_byte,
or total, or the turn's deadline if sooner). The request makes the call itself, and the same token
ends it: a timer cancels the attempt when the limit passes, and the client watcher or a shutdown
cancels the request's token, either of which shuts the read down, so the call returns at once with
an error, which is then reported as the timeout or the cancellation it was. Nothing is thrown into
the request. This spares each non-streamed call a helper's start, its mailbox and two switches:
about 0.1 ms of CPU (issue 13).

A stream with no heartbeats to send (`heartbeat=None`: a WebSocket-mode turn, whose socket has
pings of its own, and a background turn, which nobody is waiting on) is read by its consumer too
(`_streamed_inline`): the helper is there only so that a silent upstream can be interrupted by a
keep-alive. A `_StreamClock` timer cancels the attempt when a limit passes: first_byte until the
first event, then idle counted from when the consumer asks for the next event (a consumer busy
writing to a slow client is not a stalled upstream), and the deadline throughout. The timer fires
about once per limit, not per event: an event costs a clock read, not a timer. The consumer reads
no event ahead of what it has written, so a slow reader stalls the upstream read by itself.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from gateway_project import concurrency
from gateway_project.observability import metrics, metrics_enabled
from responses_app.cancellation import Cancelled, CancelToken
from responses_app.providers.base import Compaction, Event, Heartbeat, Provider, ProviderError, ProviderRequest
from responses_app.providers.http import Timeouts

# Why an attempt was abandoned, and what the client is told.
_TIMEOUT_MESSAGES = {
    "first_byte": "Provider {key!r} did not answer in time.",
    "idle": "Provider {key!r} stalled mid-stream.",
    "total": "Provider {key!r} exceeded the total time allowed for an answer.",
}
ABANDONED = "abandoned"
_T = TypeVar("_T")


class _Wake:
    """Put in the inbox when the attempt's token is set, to wake the waiting request."""


class _End:
    """The upstream's answer is over."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_WAKE = _Wake()
_END = _End()


class GuardedProvider(Provider):
    """Wraps a concrete provider; the registry puts it under the instrumentation layer."""

    def __init__(self, inner: Provider) -> None:
        super().__init__(inner.key, inner.entry)
        self.inner = inner
        self.type = inner.type
        self.timeouts = Timeouts.of(inner.entry)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        # A non-streamed answer arrives whole: no heartbeats, first_byte bounds all of it.
        return _inline(self.inner.generate, request, self.timeouts, self.key)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        if request.heartbeat is None:
            return _streamed_inline(self.inner.stream, request, self.timeouts, self.key)
        return _guarded(self.inner.stream, request, self.timeouts, self.key)

    def count_input_tokens(self, request: ProviderRequest) -> int:
        return self._once(self.inner.count_input_tokens, request, "the token count")

    def compact(self, request: ProviderRequest) -> Compaction:
        return self._once(self.inner.compact, request, "the compaction")

    def _once(self, call: Callable[[ProviderRequest], _T], request: ProviderRequest, what: str) -> _T:
        """One upstream call that is not an answer, under generate()'s limits (first_byte bounds it;
        the token cancels it)."""
        results: list[_T] = []

        def run(attempt: ProviderRequest) -> Iterator[Event]:
            results.append(call(attempt))
            return iter(())

        for _event in _inline(run, request, self.timeouts, self.key):
            pass
        if not results:
            raise ProviderError("upstream", f"Provider {self.key!r} answered {what} without a result.")
        return results[0]

    def close(self) -> None:
        self.inner.close()


# Upstream events a helper may read ahead of the request consuming them.
BUFFERED = 256


def _guarded(call: Callable[[ProviderRequest], Iterator[Event]], request: ProviderRequest, timeouts: Timeouts,
             key: str) -> Iterator[Event]:
    attempt = request.cancel.child()
    # The helper may run at most BUFFERED events ahead of the reader: a client that reads slowly
    # stalls the upstream read (TCP backpressure) instead of growing the worker's memory.
    inbox = concurrency.mailbox(BUFFERED)

    def wake(_reason: str) -> None:
        inbox.put(_WAKE)
        inbox.unblock()  # a helper waiting for room sees the cancel at once

    attempt.on_cancel(wake)
    started = time.monotonic()
    deadline = _deadline(started, timeouts, request)
    concurrency.start(contextvars.copy_context().run, _pump, call, replace(request, cancel=attempt), attempt, inbox,
                      name=f"upstream-{key}")
    heartbeat = request.heartbeat
    received = False
    last = beat_from = started
    done = False
    try:
        while True:
            if received:
                limit, phase = _within(deadline, last + timeouts.idle, "idle")
            else:
                limit, phase = _within(deadline, started + timeouts.first_byte, "first_byte")
            now = time.monotonic()
            wait = limit - now
            if heartbeat:
                wait = min(wait, beat_from + heartbeat - now)
            try:
                item = inbox.get(max(0.0, wait))
            except concurrency.Empty:
                now = time.monotonic()
                if now >= limit:
                    attempt.cancel(phase)
                    raise ProviderError("timeout", _TIMEOUT_MESSAGES[phase].format(key=key)) from None
                beat_from = now
                yield Heartbeat()
                continue
            if item is _WAKE:
                request.cancel.raise_if_cancelled()
                continue
            if isinstance(item, _End):
                done = True
                return
            if isinstance(item, _Failure):
                done = True
                raise item.error
            received = True
            last = beat_from = time.monotonic()
            yield item
    finally:
        if not done:
            # Timed out, cancelled, or the caller stopped reading: end the helper's upstream read.
            attempt.cancel(ABANDONED)
        attempt.release()


def _inline(call: Callable[[ProviderRequest], Iterator[Event]], request: ProviderRequest, timeouts: Timeouts,
            key: str) -> Iterator[Event]:
    """A whole answer read by the caller itself, under the same limits and token as `_guarded`."""
    started = time.monotonic()
    limit, phase = _within(_deadline(started, timeouts, request), started + timeouts.first_byte, "first_byte")
    if limit <= started:
        raise ProviderError("timeout", _TIMEOUT_MESSAGES[phase].format(key=key))
    attempt = request.cancel.child()
    stop_timer = concurrency.call_later(limit - started, attempt.cancel, phase)
    try:
        with _in_flight():
            events = list(call(replace(request, cancel=attempt, heartbeat=None)))
    except BaseException as error:
        if not attempt.cancelled or isinstance(error, GeneratorExit):
            raise
        raise _why_stopped(request, phase, key) from None
    finally:
        stop_timer()
        attempt.release()
    yield from events


def _streamed_inline(call: Callable[[ProviderRequest], Iterator[Event]], request: ProviderRequest,
                     timeouts: Timeouts, key: str) -> Iterator[Event]:
    """A stream read by its consumer itself, under `_guarded`'s limits and token, without heartbeats."""
    started = time.monotonic()
    deadline = _deadline(started, timeouts, request)
    if deadline <= started:  # the turn's own deadline has passed: the upstream is not asked
        raise ProviderError("timeout", _TIMEOUT_MESSAGES["total"].format(key=key))
    attempt = request.cancel.child()
    clock = _StreamClock(attempt, timeouts, started, deadline)
    events: Iterator[Event] | None = None
    done = False
    try:
        with _in_flight():
            events = call(replace(request, cancel=attempt))
            while True:
                clock.reading()
                try:
                    event = next(events)
                except StopIteration:
                    done = True
                    if attempt.cancelled:  # the read was shut down and ended as if the answer had
                        raise _why_stopped(request, clock.phase, key) from None
                    return
                except BaseException as error:
                    done = True
                    if not attempt.cancelled or isinstance(error, GeneratorExit):
                        raise
                    raise _why_stopped(request, clock.phase, key) from None
                clock.received()
                yield event
    finally:
        clock.stop()
        if not done:
            # The caller stopped reading (or a limit passed while it had an event in hand).
            attempt.cancel(ABANDONED)
        close = getattr(events, "close", None)
        if close is not None:
            close()
        attempt.release()


def _why_stopped(request: ProviderRequest, phase: str, key: str) -> BaseException:
    """What a read shut down by its token was (say that, not how the read failed): the request's
    cancellation, or the limit `phase` that passed."""
    if request.cancel.reason is not None:
        return Cancelled(request.cancel.reason)
    return ProviderError("timeout", _TIMEOUT_MESSAGES[phase or "total"].format(key=key))


class _StreamClock:
    """The limits of a stream its consumer reads (`_streamed_inline`), as one timer that cancels the
    attempt once a limit has passed, and otherwise sets itself again for the next one."""

    def __init__(self, attempt: CancelToken, timeouts: Timeouts, started: float, deadline: float) -> None:
        self.attempt = attempt
        self.timeouts = timeouts
        self.started = started
        self.deadline = deadline
        self.phase = ""  # the limit that passed, once one has
        self._first = True
        self._reading_since: float | None = started  # None while the consumer has an event in hand
        self._stopped = False
        self._stop_timer = self._look_again(started)

    def reading(self) -> None:
        self._reading_since = time.monotonic()

    def received(self) -> None:
        self._first = False
        self._reading_since = None

    def stop(self) -> None:
        self._stopped = True
        self._stop_timer()

    def _limit(self) -> tuple[float, str]:
        """The limit that applies now, and its phase."""
        if self._reading_since is None:
            # The consumer has an event in hand: only the deadline counts.
            return self.deadline, "total"
        if self._first:
            return _within(self.deadline, self.started + self.timeouts.first_byte, "first_byte")
        return _within(self.deadline, self._reading_since + self.timeouts.idle, "idle")

    def _check(self) -> None:
        if self._stopped:
            return
        now = time.monotonic()
        limit, phase = self._limit()
        if now < limit:
            self._stop_timer = self._look_again(now)
            return
        self.phase = phase
        self.attempt.cancel(phase)

    def _look_again(self, now: float) -> Callable[[], None]:
        """Set the timer for the next limit, or sooner: whatever the consumer does next, an idle
        limit it starts lies at least `idle` from now, so the timer never sleeps past one."""
        return concurrency.call_later(min(self._limit()[0], now + self.timeouts.idle) - now, self._check)


def _deadline(started: float, timeouts: Timeouts, request: ProviderRequest) -> float:
    """When the attempt must be over: `total` after its start, or the turn's own deadline if sooner."""
    deadline = started + timeouts.total
    return deadline if request.deadline is None else min(deadline, request.deadline)


def _within(deadline: float, limit: float, phase: str) -> tuple[float, str]:
    """The phase's limit, or the deadline (phase "total") when that comes first."""
    return (deadline, "total") if deadline <= limit else (limit, phase)


@contextmanager
def _in_flight() -> Iterator[None]:
    """An upstream call under way, counted in `upstream_calls_in_flight` while metrics are on."""
    counted = metrics_enabled()
    if counted:
        metrics.upstream_calls_in_flight.inc()
    try:
        yield
    finally:
        if counted:
            metrics.upstream_calls_in_flight.dec()


def _pump(call: Callable[[ProviderRequest], Iterator[Event]], request: ProviderRequest, attempt: CancelToken,
          inbox: concurrency.Mailbox[Any]) -> None:
    """The helper: read the upstream, hand every event over. Whatever it raises is handed over too,
    unless the attempt was abandoned meanwhile (nobody is waiting for it then)."""
    events: Iterator[Event] | None = None
    with _in_flight():
        try:
            events = call(request)
            for event in events:
                inbox.wait_for_room()  # the reader is not too far behind
                if attempt.cancelled:
                    return
                inbox.put(event)
            inbox.put(_END)
        except Cancelled:
            return
        except BaseException as error:  # noqa: BLE001 - handed to the waiting request, which decides
            if not attempt.cancelled:
                inbox.put(_Failure(error))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
