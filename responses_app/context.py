"""The turn's context: who is asking and on what terms, built once at the edge and passed down.

The view (or any other transport adapter) builds it from what the middleware recorded in the
request's notes; below the view nothing reads the request or Django settings again: the pipeline,
the providers and the store get what they need from here, explicitly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest

from gateway_project.config import GatewayConfig, ModelEntry
from gateway_project.request_notes import notes_of
from responses_app.cancellation import CancelToken

if TYPE_CHECKING:
    from gateway_project.middleware.ratelimit import RateGate, Ticket
    from identity_app.identity import Identity
    from responses_app.connection_cache import ConnectionCache


@dataclass
class TurnContext:
    request_id: str
    identity: Identity | None
    # The configuration this turn runs under, read once: a reload mid-turn does not change it.
    config: GatewayConfig
    # Set when the turn must stop: the client hung up, or the worker is shutting down.
    cancel: CancelToken
    # time.monotonic() by which the turn must be over (server.turn_timeout from its arrival).
    deadline: float
    # Seconds of upstream silence after which a stream gets a keep-alive comment (None: never).
    heartbeat: float | None
    # The rate limiter's gate for this request (None when limits are off) and, once admitted, its ticket.
    gate: RateGate | None = None
    ticket: Ticket | None = None
    # A WebSocket connection's unstored responses, which `previous_response_id` may also name.
    connection_cache: ConnectionCache | None = None

    @classmethod
    def for_request(cls, request: HttpRequest) -> TurnContext:
        notes = notes_of(request)
        config: GatewayConfig = settings.GATEWAY
        return cls(request_id=notes.request_id, identity=notes.identity, config=config, cancel=CancelToken(),
                   deadline=time.monotonic() + config.server.turn_timeout,
                   heartbeat=config.server.sse_keepalive or None, gate=notes.rate_gate)

    @property
    def owner(self) -> str:
        """The tenant that owns what this turn reads and writes ('' when auth is off)."""
        return self.identity.owner if self.identity is not None else ""

    def may_use(self, model: ModelEntry) -> bool:
        return self.identity is None or self.identity.may_use(model)

    def admit(self, *, body_bytes: int, max_output_tokens: int | None) -> None:
        """Charge the rate limits (raises the 429 when refused)."""
        if self.gate is not None:
            self.ticket = self.gate.admit(body_bytes=body_bytes, max_output_tokens=max_output_tokens)

    def record_usage(self, usage: dict[str, Any] | None) -> None:
        """The turn's real usage, so the limiter reconciles its token reservation."""
        if self.ticket is not None:
            self.ticket.record_usage(usage)
