"""Rate limits per identity: requests and tokens per minute, shared by every worker through Redis.

This middleware sits before auth (the seed's order) yet limits per identity: the decision is
taken in `process_view`, which Django runs after every middleware's request phase, so auth has
already recorded the identity in the request's notes. A request that never reaches a view (auth
refused it, or no URL matched) is counted after the fact against its client address, so rotating
bad keys buys nothing: once the address is out of allowance its 401s become 429s.

Views that create turns are marked `@admitted_by_view`: they parse the body once and then admit
the request themselves through the `RateGate` left in the notes, with the token cost known
(input estimate + max_output_tokens or the configured default). A view that fails before admitting
(bad input) is charged one request after the fact, like an unauthenticated one. The reservation
is reconciled with the real usage when the turn ends: the turn pipeline records the usage on the
ticket, and the ticket is settled when the JSON response is built or, for a stream, when the
streaming generator finishes or is closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.api_errors import ApiError
from gateway_project.middleware import StreamEnd, when_stream_ends
from gateway_project.middleware.errors import is_api_path
from gateway_project.observability import metrics
from gateway_project.request_notes import notes_of
from identity_app.client_ip import client_ip, parse_networks
from identity_app.identity import identity_of
from identity_app.limiter import BackendUnavailable, Decision, Limiter, Limits, build_limiter

# About four bytes of JSON per token: an estimate, corrected by reconciliation with real usage.
BYTES_PER_TOKEN = 4

View = Callable[..., HttpResponse | StreamingHttpResponse]


def admitted_by_view(view: View) -> View:
    """Mark a view that admits its request itself, once it knows the token cost (see RateGate)."""
    view.admitted_by_view = True  # type: ignore[attr-defined]
    return view


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


def rate_limited(decision: Decision) -> ApiError:
    scope = decision.scope or "requests"
    bucket = decision.requests if scope == "requests" else decision.tokens
    limit = bucket.limit if bucket else 0
    wait = decision.retry_after
    return ApiError(
        429, f"Rate limit reached for {scope} per minute (limit {limit}). Please try again in {wait:.3f}s.",
        type=scope, code="rate_limit_exceeded",
        # Retry-After is whole seconds (HTTP); retry-after-ms is the exact wait, which the OpenAI SDK prefers.
        headers={"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                 **rate_limit_headers(decision)},
    )


def limiter_unavailable() -> ApiError:
    return ApiError(503, "Rate limiting is unavailable, so the gateway is refusing requests; try again shortly.",
                    type="server_error", code="rate_limit_unavailable", headers={"Retry-After": "1"})


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
    # A background turn outlives its request: its runner settles the ticket when the turn ends.
    handed_over: bool = False

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


@dataclass
class RateGate:
    """Admission for a request whose view decides when: one call to `admit()`, after parsing."""

    middleware: RateLimitMiddleware
    request: HttpRequest

    def admit(self, *, body_bytes: int, max_output_tokens: int | None) -> Ticket | None:
        """Charge the request (raising the 429/503 `ApiError` when refused); the ticket to record
        the turn's usage on, or None when limits are not in force (Redis down, fail open)."""
        middleware = self.middleware
        subject, limits = middleware._subject_and_limits(self.request)
        tokens = 0
        if limits.tpm:
            reserve = middleware.config.default_max_output_tokens if max_output_tokens is None else max_output_tokens
            tokens = body_bytes // BYTES_PER_TOKEN + 1 + reserve
        notes = notes_of(self.request)
        notes.rate_decided = True
        notes.rate_ticket = middleware._decide(subject, limits, tokens=tokens)
        return notes.rate_ticket


def _settle_at_the_end(ticket: Ticket) -> Callable[[StreamEnd], None]:
    def settle(_end: StreamEnd) -> None:
        if not ticket.handed_over:
            ticket.settle()

    return settle


class RateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        self.get_response = get_response
        config = settings.GATEWAY.rate_limit
        if not config.enabled:
            raise MiddlewareNotUsed
        self.config = config
        self.global_limits = Limits(rpm=config.rpm, tpm=config.tokens_per_minute)
        self.trusted = parse_networks(config.trusted_proxies)
        self.limiter = build_limiter(settings.REDIS_URL, prefix=config.redis_key_prefix,
                                     timeout=config.redis_timeout, fail_open=config.fail_open)

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        if not is_api_path(request.path):
            return self.get_response(request)
        response = self.get_response(request)
        notes = notes_of(request)
        ticket: Ticket | None = notes.rate_ticket
        if ticket is None and not notes.rate_decided:
            # No view admitted it (auth refused the request, no route matched, or the body was
            # rejected before admission): charge it now, to the client address when there is no identity.
            subject, limits = self._subject_and_limits(request)
            try:
                ticket = self._decide(subject, limits, tokens=0)
            except ApiError as refused:
                return refused.response()
        if ticket is None:
            return response
        for name, value in rate_limit_headers(ticket.decision).items():
            response[name] = value
        if isinstance(response, StreamingHttpResponse):
            when_stream_ends(response, _settle_at_the_end(ticket))
        elif not ticket.handed_over:
            ticket.settle()
        return response

    def process_view(self, request: HttpRequest, view: Callable[..., Any], args: Any,
                     kwargs: Any) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        notes = notes_of(request)
        if getattr(view, "admitted_by_view", False):
            notes.rate_gate = RateGate(self, request)
            return None
        notes.rate_decided = True
        subject, limits = self._subject_and_limits(request)
        try:
            notes.rate_ticket = self._decide(subject, limits, tokens=0)
        except ApiError as refused:
            return refused.response()
        return None

    def _subject_and_limits(self, request: HttpRequest) -> tuple[str, Limits]:
        identity = identity_of(request)
        if identity is None:
            return f"ip:{client_ip(request, self.trusted)}", self.global_limits
        return identity.subject, Limits(rpm=identity.rpm or self.global_limits.rpm,
                                        tpm=identity.tpm or self.global_limits.tpm)

    def _decide(self, subject: str, limits: Limits, *, tokens: int) -> Ticket | None:
        """The admitted request's ticket, None when limits are not in force (fail open); a refusal
        is raised as the 429 (or 503, Redis down and fail closed) `ApiError`."""
        try:
            decision = self.limiter.acquire(subject, limits, tokens=tokens)
        except BackendUnavailable:
            metrics.rate_limit_rejections_total.labels("backend_unavailable").inc()
            raise limiter_unavailable() from None
        if decision is None:
            return None  # fail open: admitted, no headers (there is no state to report)
        if not decision.admitted:
            metrics.rate_limit_rejections_total.labels(decision.scope or "requests").inc()
            raise rate_limited(decision)
        return Ticket(self.limiter, subject, limits.tpm, decision)
