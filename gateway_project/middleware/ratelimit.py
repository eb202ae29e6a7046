"""Rate limits per identity: requests and tokens per minute, shared by every worker through Redis.

This middleware sits before auth (the seed's order) yet limits per identity: the decision is
taken in `process_view`, which Django runs after every middleware's request phase, so auth has
already attached `request.gateway_identity`. A request that never reaches a view (auth refused
it, or no URL matched) is counted after the fact against its client address, so rotating bad
keys buys nothing: once the address is out of allowance its 401s become 429s.

Tokens are reserved up front (input estimate + max_output_tokens or the configured default)
and reconciled with the real usage when the turn ends: the service reports usage through
`request.gateway_usage_hook`, and the reservation is settled when the JSON response is built
or, for a stream, when the streaming generator finishes or is closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse

from gateway_project.api_errors import ApiError
from gateway_project.middleware.errors import is_api_path
from gateway_project.request_notes import notes_of
from identity_app.client_ip import client_ip, parse_networks
from identity_app.identity import identity_of
from identity_app.limiter import BackendUnavailable, Decision, Limiter, Limits, build_limiter
from identity_app.limiter_metrics import REJECTIONS
from identity_app.request_facts import create_facts


def format_reset(seconds: float) -> str:
    """OpenAI's duration style for x-ratelimit-reset-*: `20ms`, `1.5s`, `6m0s`."""
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest_ms = divmod(ms, 60_000)
    secs = f"{rest_ms / 1000:g}s"
    return f"{minutes}m{secs}" if minutes else secs


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, bucket in (("requests", decision.requests), ("tokens", decision.tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining)
            headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.reset_seconds)
    return headers


def rate_limited(decision: Decision) -> HttpResponse:
    scope = decision.scope or "requests"
    bucket = decision.requests if scope == "requests" else decision.tokens
    limit = bucket.limit if bucket else 0
    wait = decision.retry_after
    return ApiError(
        429, f"Rate limit reached for {scope} per minute (limit {limit}). Please try again in {wait:.3f}s.",
        type=scope, code="rate_limit_exceeded",
        # Retry-After is whole seconds (HTTP); retry-after-ms is the exact wait, which the OpenAI SDK prefers.
        headers={"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))},
    ).response()


def limiter_unavailable() -> HttpResponse:
    return ApiError(503, "Rate limiting is unavailable, so the gateway is refusing requests; try again shortly.",
                    type="server_error", code="rate_limit_unavailable", headers={"Retry-After": "1"}).response()


@dataclass
class Ticket:
    """One admitted request's reservation, settled exactly once when its response ends."""

    limiter: Limiter
    subject: str
    tpm: int | None
    decision: Decision
    used: int | None = None
    reported: bool = False
    settled: bool = False

    def record_usage(self, usage: dict[str, Any] | None) -> None:
        self.reported = True
        if usage:
            total = usage.get("total_tokens")
            if total is None:
                total = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            self.used = int(total)

    def settle(self) -> None:
        if self.settled or not self.tpm or not self.decision.reserved_tokens:
            return
        self.settled = True
        reserved = self.decision.reserved_tokens
        if not self.reported:
            used = 0  # the turn ended before any usage (upstream error): give the reservation back
        elif self.used is None:
            used = reserved  # the provider reported no usage: the estimate is the best we have
        else:
            used = self.used
        self.limiter.reconcile(self.subject, self.tpm, reserved - used)


def _settle_after(content: Iterable[bytes], ticket: Ticket) -> Iterator[bytes]:
    try:
        yield from content
    finally:
        ticket.settle()


class RateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        config = settings.GATEWAY.rate_limit
        if not config.enabled:
            raise MiddlewareNotUsed
        self.config = config
        self.global_limits = Limits(rpm=config.rpm, tpm=config.tokens_per_minute)
        self.trusted = parse_networks(config.trusted_proxies)
        self.limiter = build_limiter(settings.REDIS_URL, prefix=config.redis_key_prefix,
                                     timeout=config.redis_timeout, fail_open=config.fail_open)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path):
            return self.get_response(request)
        response = self.get_response(request)
        notes = notes_of(request)
        ticket: Ticket | None = notes.rate_ticket
        if ticket is None and not notes.rate_decided:
            # No view ran (auth refused the request, or no route matched): charge it now, to the
            # client address when there is no identity.
            subject, limits = self._subject_and_limits(request)
            outcome = self._decide(subject, limits, tokens=0)
            if isinstance(outcome, HttpResponse):
                return outcome
            ticket = outcome
        if ticket is None:
            return response
        for name, value in rate_limit_headers(ticket.decision).items():
            response[name] = value
        if response.streaming:
            response.streaming_content = _settle_after(response.streaming_content, ticket)
        else:
            ticket.settle()
        return response

    def process_view(self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        notes = notes_of(request)
        notes.rate_decided = True
        subject, limits = self._subject_and_limits(request)
        facts = create_facts(request)
        tokens = 0
        if facts is not None and limits.tpm:
            max_out = facts.max_output_tokens
            tokens = facts.input_estimate + (self.config.default_max_output_tokens if max_out is None else max_out)
        outcome = self._decide(subject, limits, tokens=tokens)
        if isinstance(outcome, HttpResponse):
            return outcome
        if outcome is not None:
            notes.rate_ticket = outcome
        return None

    def _subject_and_limits(self, request: HttpRequest) -> tuple[str, Limits]:
        identity = identity_of(request)
        if identity is None:
            return f"ip:{client_ip(request, self.trusted)}", self.global_limits
        return identity.subject, Limits(rpm=identity.rpm or self.global_limits.rpm,
                                        tpm=identity.tpm or self.global_limits.tpm)

    def _decide(self, subject: str, limits: Limits, *, tokens: int) -> Ticket | HttpResponse | None:
        try:
            decision = self.limiter.acquire(subject, limits, tokens=tokens)
        except BackendUnavailable:
            REJECTIONS.labels("backend_unavailable").inc()
            return limiter_unavailable()
        if decision is None:
            return None  # fail open: admitted, no headers (there is no state to report)
        ticket = Ticket(self.limiter, subject, limits.tpm, decision)
        if not decision.admitted:
            REJECTIONS.labels(decision.scope or "requests").inc()
            response = rate_limited(decision)
            for name, value in rate_limit_headers(decision).items():
                response[name] = value
            return response
        return ticket
