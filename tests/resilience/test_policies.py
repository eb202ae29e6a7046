"""The breaker's window and probes, and the retry delay, as units (the API tests cover the wiring)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_project.config import CircuitBreakerConfig, RetryConfig
from responses_app.providers.base import ProviderError
from responses_app.providers.resilience import CircuitBreaker, retry_delay
from tests.resilience.conftest import FakeClock


def _breaker(**settings: Any) -> CircuitBreaker:
    return CircuitBreaker("unit-test", "model", CircuitBreakerConfig(**settings))


def test_failures_older_than_the_window_are_forgotten(clock: FakeClock) -> None:
    breaker = _breaker(min_requests=3, failure_ratio=0.6, window=10)
    for _ in range(2):
        breaker.record(breaker.allow(), "failure")
    clock.now += 11
    breaker.record(breaker.allow(), "failure")
    breaker.record(breaker.allow(), "success")
    assert breaker.state == "closed"  # 1 failure of 2 in the window, below min_requests anyway
    breaker.record(breaker.allow(), "failure")
    assert breaker.state == "open"  # 2 of 3 in the window


def test_the_failure_ratio_follows_the_window_as_it_slides(clock: FakeClock) -> None:
    """The failures in the window are counted as outcomes come and go (not summed per call)."""
    breaker = _breaker(min_requests=4, failure_ratio=0.5, window=10)
    for outcome in ("failure", "success", "success", "success"):  # 1 of 4
        breaker.record(breaker.allow(), outcome)
        clock.now += 3
    # The failure (t=0) has left the window at t=12; three successes and these two failures remain.
    breaker.record(breaker.allow(), "failure")
    breaker.record(breaker.allow(), "failure")
    assert breaker.state == "closed"  # 2 of 5 (the first failure no longer counts)
    breaker.record(breaker.allow(), "failure")
    assert breaker.state == "open"  # 3 of 6


def test_half_open_admits_only_its_probes_and_needs_all_to_succeed(clock: FakeClock) -> None:
    breaker = _breaker(min_requests=1, open_duration=5, half_open_probes=2)
    breaker.record(breaker.allow(), "failure")
    assert breaker.allow() is None
    clock.now += 6
    first, second = breaker.allow(), breaker.allow()
    assert first is not None and second is not None and breaker.allow() is None
    assert breaker.state == "half-open"
    breaker.record(first, "success")
    assert breaker.state == "half-open"
    breaker.record(second, "success")
    assert breaker.state == "closed"


def test_a_neutral_probe_frees_its_slot(clock: FakeClock) -> None:
    breaker = _breaker(min_requests=1, open_duration=5, half_open_probes=1)
    breaker.record(breaker.allow(), "failure")
    clock.now += 6
    probe = breaker.allow()
    breaker.record(probe, "neutral")
    assert breaker.allow() is not None


def test_outcomes_of_calls_admitted_before_a_transition_are_ignored(clock: FakeClock) -> None:
    breaker = _breaker(min_requests=1, open_duration=5, half_open_probes=1)
    old = breaker.allow()
    breaker.record(breaker.allow(), "failure")  # opens
    clock.now += 6
    probe = breaker.allow()
    breaker.record(old, "success")  # admitted while closed: says nothing about now
    assert breaker.state == "half-open"
    breaker.record(probe, "success")
    assert breaker.state == "closed"


def test_a_disabled_breaker_never_opens() -> None:
    breaker = _breaker(enabled=False, min_requests=1)
    for _ in range(5):
        breaker.record(breaker.allow(), "failure")
    assert breaker.allow() is not None and breaker.state == "closed"


@pytest.mark.parametrize("attempt", [0, 1, 2, 3])
def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(attempt: int) -> None:
    policy = RetryConfig(max_retries=5, backoff=1, max_backoff=4)
    ceiling = min(4, 2**attempt)
    delays = [retry_delay(policy, ProviderError("upstream", "x", upstream_status=500), attempt) for _ in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


def test_retry_after_sets_the_minimum_delay_and_too_long_means_no_retry() -> None:
    policy = RetryConfig(max_retries=2, backoff=0.1, max_retry_after=10)
    assert retry_delay(policy, ProviderError("rate_limited", "x", retry_after=3), 0) == 3
    assert retry_delay(policy, ProviderError("rate_limited", "x", retry_after=11), 0) is None


def test_what_is_not_retried() -> None:
    policy = RetryConfig(max_retries=2)
    for error in (ProviderError("bad_request", "x", upstream_status=400), ProviderError("timeout", "x"),
                  ProviderError("auth", "x", upstream_status=401), ProviderError("upstream", "malformed")):
        assert retry_delay(policy, error, 0) is None
    assert retry_delay(policy, ProviderError("upstream", "x", upstream_status=500), 2) is None  # out of retries
