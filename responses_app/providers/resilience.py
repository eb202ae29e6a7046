"""Retries, fallbacks and circuit breakers, wrapped around providers.

`ResilientProvider` looks like one provider to the service, but holds an ordered list of
candidates (the requested model, then its `fallbacks`). It tries them in turn, retrying each with
exponential backoff and jitter on connection errors, 429 (honouring Retry-After) and 5xx, and only
until the first content event exists: once anything could have reached the client, a failure ends
the stream instead (the service turns it into `response.failed`). Usage events that arrive before
any content (Anthropic's `message_start`) are held back for that reason, so they do not count as
"started".

Each provider entry has one `CircuitBreaker` per worker process: a failure ratio over a sliding
window opens it, requests then fail fast (503, or the next fallback) until `open_duration` has
passed, and a few half-open probes decide whether it closes again. A client's mistake (upstream
400) and an upstream's rate limit (429, it is healthy but busy) are neither successes nor failures.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from prometheus_client import Counter, Gauge

from gateway_project.config import CircuitBreakerConfig, ModelEntry, RetryConfig
from responses_app.providers.base import Event, Provider, ProviderError, ProviderRequest, Usage

logger = logging.getLogger(__name__)

# The default registry: the /metrics endpoint exposes it. `livemax` so that, in prometheus
# multiprocess mode, a scrape shows the worst state any live worker's breaker is in.
CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state", "Circuit breaker state per provider entry: 0 closed, 1 open, 2 half-open.",
    ["provider"], multiprocess_mode="livemax",
)
CIRCUIT_BREAKER_TRANSITIONS = Counter(
    "circuit_breaker_state_transitions", "Circuit breaker state changes per provider entry.",
    ["provider", "from", "to"],
)

State = Literal["closed", "open", "half-open"]
Outcome = Literal["success", "failure", "neutral"]
_STATE_VALUE = {"closed": 0, "open": 1, "half-open": 2}


def clock() -> float:
    """Monotonic seconds; a function so tests can move time instead of sleeping through open_duration."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)  # cooperative under gevent (monkey-patched)


def outcome_of(error: ProviderError) -> Outcome:
    return "neutral" if error.kind in ("bad_request", "rate_limited") else "failure"


class CircuitBreaker:
    def __init__(self, provider: str, config: CircuitBreakerConfig) -> None:
        self.provider = provider
        self.config = config
        self.state: State = "closed"
        self._lock = threading.Lock()
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed) while closed
        self._opened_at = 0.0
        self._probes = 0
        self._probe_successes = 0
        # Bumped on every transition: outcomes of calls admitted under an older state are ignored.
        self._generation = 0
        CIRCUIT_BREAKER_STATE.labels(provider).set(0)

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
                self._outcomes.append((now, outcome == "failure"))
                while self._outcomes and self._outcomes[0][0] < now - self.config.window:
                    self._outcomes.popleft()
                failures = sum(1 for _, failed in self._outcomes if failed)
                if (len(self._outcomes) >= self.config.min_requests
                        and failures / len(self._outcomes) >= self.config.failure_ratio):
                    self._move("open")

    def _move(self, to: State) -> None:
        logger.warning("circuit breaker for provider %r: %s -> %s", self.provider, self.state, to)
        CIRCUIT_BREAKER_TRANSITIONS.labels(self.provider, self.state, to).inc()
        CIRCUIT_BREAKER_STATE.labels(self.provider).set(_STATE_VALUE[to])
        self.state = to
        self._generation += 1
        self._outcomes.clear()
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
    delay = backoff / 2 + random.uniform(0, backoff / 2)
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


T = TypeVar("T")
_Started = tuple[list[Event], Iterator[Event]]


class ResilientProvider:
    """The provider the service talks to for one request: candidates tried in order (see module doc)."""

    def __init__(self, candidates: list[Candidate]) -> None:
        assert candidates, "a route needs at least one candidate"
        self.candidates = candidates
        self.serving = candidates[0]

    @property
    def key(self) -> str:
        """The provider entry that is answering (the fallback's, once one took over)."""
        return self.serving.provider.key

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        candidate, token, events = self._first_success(request, lambda c, r: list(c.provider.generate(r)))
        candidate.breaker.record(token, "success")
        return iter(events)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        candidate, token, (head, events) = self._first_success(request, _start_stream)
        outcome: Outcome = "success"
        try:
            yield from head
            yield from events
        except ProviderError as error:
            outcome = outcome_of(error)
            raise
        finally:
            # A client that went away (GeneratorExit) says nothing bad about the upstream: success.
            events.close()  # type: ignore[attr-defined]
            candidate.breaker.record(token, outcome)

    def _first_success(self, request: ProviderRequest,
                       attempt: Callable[[Candidate, ProviderRequest], T]) -> tuple[Candidate, int | None, T]:
        tried: ProviderError | None = None
        refused: ProviderError | None = None
        for candidate in self.candidates:
            upstream_request = replace(request, model=candidate.model.upstream_model)
            for number in range(candidate.retry.max_retries + 1):
                token = candidate.breaker.allow()
                if token is None:
                    refused = ProviderError(
                        "unavailable", f"Provider {candidate.provider.key!r} is failing and temporarily switched off "
                        "(circuit breaker open); retry later.", retryable=False)
                    break
                try:
                    result = attempt(candidate, upstream_request)
                except ProviderError as error:
                    candidate.breaker.record(token, outcome_of(error))
                    if error.kind == "bad_request":
                        raise  # the client's request is at fault: no other model will like it better
                    tried = error
                    delay = retry_delay(candidate.retry, error, number)
                    if delay is None:
                        break
                    logger.warning("provider %r failed (%s), retry %d in %.2fs", candidate.provider.key,
                                   error.message, number + 1, delay)
                    sleep(delay)
                    continue
                except BaseException:
                    candidate.breaker.record(token, "neutral")
                    raise
                self.serving = candidate
                return candidate, token, result
            if candidate is not self.candidates[-1]:
                logger.warning("model %r unavailable, falling back", candidate.model.name)
        raise tried or refused  # type: ignore[misc]

    def close(self) -> None:
        """Nothing to release: the wrapped providers belong to the registry."""


def _start_stream(candidate: Candidate, request: ProviderRequest) -> _Started:
    """Open the upstream stream and read up to its first content event (see module doc)."""
    events: Any = None
    head: list[Event] = []
    try:
        events = candidate.provider.stream(request)
        for event in events:
            head.append(event)
            if not isinstance(event, Usage):
                break
    except BaseException:
        if events is not None:
            events.close()
        raise
    return head, events
