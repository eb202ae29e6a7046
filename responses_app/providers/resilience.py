"""Retries, fallbacks and circuit breakers, wrapped around providers.

`ResilientProvider` looks like one provider to the pipeline, but holds an ordered list of
candidates (the requested model, then its `fallbacks`). It tries them in turn, retrying each with
exponential backoff and jitter on connection errors, 429 (honouring Retry-After) and 5xx, and only
until the first content event exists: once anything could have reached the client, a failure ends
the stream instead (the pipeline turns it into `response.failed`). Usage events that arrive before
any content (Anthropic's `message_start`) are held back for that reason, so they do not count as
"started"; heartbeats pass straight through.

Each provider entry has one `CircuitBreaker` per upstream model and worker process, so a model that
fails (or a tenant whose requests make it fail) switches off that model on that entry only, never
the entry's other models. A breaker opens only when its window holds at least `min_requests` calls
and the failure ratio reaches `failure_ratio`; requests then fail fast (503, or the next fallback)
until `open_duration` has passed, and a few half-open probes decide whether it closes again.
Neutral, neither success nor failure: the client's own mistakes (upstream 400/404/413/422), an
upstream's rate limit (429: healthy but busy), and calls the client or a shutdown cut short.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from gateway_project.config import CircuitBreakerConfig, ModelEntry, RetryConfig
from gateway_project.observability import metrics
from responses_app.cancellation import Cancelled
from responses_app.providers.base import Compaction, Event, Heartbeat, Provider, ProviderError, ProviderRequest, Usage

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half-open"]
Outcome = Literal["success", "failure", "neutral"]
_STATE_VALUE = {"closed": 0, "open": 1, "half-open": 2}
_T = TypeVar("_T")


def clock() -> float:
    """Monotonic seconds; a function so tests can move time instead of sleeping through open_duration."""
    return time.monotonic()


def outcome_of(error: ProviderError) -> Outcome:
    return "neutral" if error.kind in ("bad_request", "rate_limited") else "failure"


class CircuitBreaker:
    def __init__(self, provider: str, model: str, config: CircuitBreakerConfig) -> None:
        self.provider = provider
        self.model = model
        self.config = config
        self.state: State = "closed"
        self._lock = threading.Lock()
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed) while closed
        # How many of `_outcomes` are failures, kept as they come and go: summing the window on every
        # call cost time in proportion to the traffic (thousands of entries at a few hundred calls/s).
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._probe_successes = 0
        # Bumped on every transition: outcomes of calls admitted under an older state are ignored.
        self._generation = 0
        metrics.circuit_breaker_state.labels(provider, model).set(0)

    def allow(self) -> int | None:
        """A token to pass to `record()` when the call may go ahead; None when it must fail fast."""
        if not self.config.enabled:
            return 0
        with self._lock:
            if self.state == "open":
                if clock() - self._opened_at < self.config.open_duration:
                    return None
                self._move("half-open")
            if self.state == "half-open":
                if self._probes >= self.config.half_open_probes:
                    return None
                self._probes += 1
            return self._generation

    def record(self, token: int | None, outcome: Outcome) -> None:
        if not self.config.enabled or token is None:
            return
        with self._lock:
            if token != self._generation:
                return
            if self.state == "half-open":
                if outcome == "failure":
                    self._move("open")
                elif outcome == "neutral":
                    self._probes -= 1  # no verdict: let another probe decide
                else:
                    self._probe_successes += 1
                    if self._probe_successes >= self.config.half_open_probes:
                        self._move("closed")
            elif self.state == "closed" and outcome != "neutral":
                now = clock()
                failed = outcome == "failure"
                self._outcomes.append((now, failed))
                self._failures += failed
                while self._outcomes and self._outcomes[0][0] < now - self.config.window:
                    self._failures -= self._outcomes.popleft()[1]
                if (len(self._outcomes) >= self.config.min_requests
                        and self._failures / len(self._outcomes) >= self.config.failure_ratio):
                    self._move("open")

    def _move(self, to: State) -> None:
        logger.warning("circuit breaker for provider %r model %r: %s -> %s", self.provider, self.model, self.state, to)
        metrics.circuit_breaker_state_transitions_total.labels(self.provider, self.model, self.state, to).inc()
        metrics.circuit_breaker_state.labels(self.provider, self.model).set(_STATE_VALUE[to])
        self.state = to
        self._generation += 1
        self._outcomes.clear()
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        if to == "open":
            self._opened_at = clock()


def retry_delay(policy: RetryConfig, error: ProviderError, attempt: int) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None when not to retry."""
    if not error.retryable or attempt >= policy.max_retries:
        return None
    backoff = min(policy.max_backoff, policy.backoff * 2**attempt)
    # "Equal jitter": at least half the backoff, so retries of many requests spread out but never bunch at 0.
    delay = backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - jitter, not a secret
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return None
        delay = max(delay, error.retry_after)
    return delay


@dataclass(frozen=True)
class Candidate:
    model: ModelEntry
    provider: Provider
    breaker: CircuitBreaker
    retry: RetryConfig


class ResilientProvider:
    """The provider the pipeline talks to for one request: candidates tried in order (see module doc)."""

    def __init__(self, candidates: list[Candidate]) -> None:
        assert candidates, "a route needs at least one candidate"  # noqa: S101 - the registry builds routes
        self.candidates = candidates
        self.serving = candidates[0]

    @property
    def key(self) -> str:
        """The provider entry that is answering (the fallback's, once one took over)."""
        return self.serving.provider.key

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        return iter(self._once(request, lambda provider, attempt: list(provider.generate(attempt))))

    def compact(self, request: ProviderRequest) -> Compaction:
        """A compaction pass (Provider.compact), with the same retries, fallbacks and breakers as an answer."""
        return self._once(request, lambda provider, attempt: provider.compact(attempt))

    def _once(self, request: ProviderRequest, call: Callable[[Provider, ProviderRequest], _T]) -> _T:
        """One whole upstream round trip per attempt; the first that succeeds is the result."""
        attempts = _Attempts(self.candidates, request)
        for candidate, upstream_request in attempts:
            try:
                result = call(candidate.provider, upstream_request)
            except ProviderError as error:
                attempts.failed(error)
                continue
            except BaseException:
                attempts.ended("neutral")
                raise
            attempts.ended("success")
            self.serving = candidate
            return result
        raise attempts.exhausted()

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        attempts = _Attempts(self.candidates, request)
        for candidate, upstream_request in attempts:
            events = candidate.provider.stream(upstream_request)
            held: list[Event] = []
            started = False
            outcome: Outcome | None = "neutral"  # None: failed() has judged the attempt
            try:
                for event in events:
                    if isinstance(event, Heartbeat) or started:
                        yield event
                    elif isinstance(event, Usage):
                        held.append(event)  # not content: a failure now may still be retried
                    else:
                        started = True
                        self.serving = candidate
                        yield from held
                        yield event
                if not started:
                    self.serving = candidate
                    yield from held
                outcome = "success"
                return
            except ProviderError as error:
                if started:
                    outcome = outcome_of(error)
                    raise
                outcome = None
                attempts.failed(error)
            finally:
                # A client that left or a shutdown (GeneratorExit, Cancelled) says nothing about the upstream.
                events.close()  # type: ignore[attr-defined]
                if outcome is not None:
                    attempts.ended(outcome)
        raise attempts.exhausted()

    def close(self) -> None:
        """Nothing to release: the wrapped providers belong to the registry."""


class _Attempts:
    """The attempts the policy allows for one request, in order: each candidate, retried with backoff
    while `failed()` judges the last error worth another try, then the next candidate.

    The breaker hears one outcome per candidate and request, when that candidate is done with: a
    request whose retries all failed is one failure, not three, so `min_requests` counts requests."""

    def __init__(self, candidates: list[Candidate], request: ProviderRequest) -> None:
        self.candidates = candidates
        self.request = request
        self.last_error: ProviderError | None = None
        self.refused: ProviderError | None = None
        self._number = 0
        self._retry_in: float | None = None
        self._token: int | None = None

    def __iter__(self) -> Iterator[tuple[Candidate, ProviderRequest]]:
        cancel = self.request.cancel
        for candidate in self.candidates:
            upstream_request = replace(self.request, model=candidate.model.upstream_model)
            self._candidate = candidate
            cancel.raise_if_cancelled()
            self._token = candidate.breaker.allow()
            if self._token is None:
                self.refused = ProviderError(
                    "unavailable", f"Provider {candidate.provider.key!r} is failing for model "
                    f"{candidate.model.upstream_model!r} and temporarily switched off (circuit breaker open); "
                    "retry later.", retryable=False)
                continue
            for number in range(candidate.retry.max_retries + 1):
                self._number, self._retry_in = number, None
                yield candidate, upstream_request
                if self._retry_in is None:
                    break
                logger.warning("provider %r failed (%s), retry %d in %.2fs", candidate.provider.key,
                               self.last_error.message if self.last_error else "", number + 1, self._retry_in)
                if cancel.sleep(self._retry_in):
                    self.ended("neutral")
                    raise Cancelled(cancel.reason or "")
            if candidate is not self.candidates[-1]:
                logger.warning("model %r unavailable, falling back", candidate.model.name)

    def failed(self, error: ProviderError) -> None:
        """The attempt just yielded failed before any content."""
        if error.kind == "bad_request":
            self.ended("neutral")
            raise error  # the client's request is at fault: no other model will like it better
        self.last_error = error
        self._retry_in = retry_delay(self._candidate.retry, error, self._number)
        if self._retry_in is None:
            self.ended(outcome_of(error))

    def ended(self, outcome: Outcome) -> None:
        """This candidate is done with for this request: its one outcome goes to its breaker."""
        if self._token is not None:
            self._candidate.breaker.record(self._token, outcome)
            self._token = None

    def exhausted(self) -> ProviderError:
        error = self.last_error or self.refused
        assert error is not None  # noqa: S101 - called only after an attempt failed or was refused
        return error
