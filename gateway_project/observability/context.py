"""Per-request state shared by the middleware, the provider wrapper and the log formatter.

A context variable, not the request object, because the provider and store wrappers never see
the request. Under gevent every request is its own greenlet with its own context.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class RequestScope:
    request_id: str
    # Wall time spent waiting on upstream providers, so the gateway's own overhead can be measured.
    upstream_seconds: float = 0.0


current: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("gateway_request_scope", default=None)


def add_upstream_time(seconds: float) -> None:
    scope = current.get()
    if scope is not None:
        scope.upstream_seconds += seconds
