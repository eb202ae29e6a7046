"""The gateway's Prometheus metric families: the seed's, exactly as docs/observability.md lists
them, and the rate limiter's.

Every family is on prometheus_client's default registry, and so are django-prometheus's
django_db_* (its database backends, gateway_project/settings.py) and django_model_* (its model
mixin), so one exposition (see `exposition()`) carries them all. Under gunicorn,
PROMETHEUS_MULTIPROC_DIR (set by gateway_project/gunicorn.conf.py before any worker imports
prometheus_client) makes every worker write its samples to files that the scraped worker
aggregates, so a scrape is right whichever worker answers it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class _ChildrenByValues:
    """`labels(*values)` from a dict of the children already made. prometheus_client validates
    and converts the values and takes a lock on every call; a request makes about a dozen such
    calls on these families (issue 13). Only positional calls are remembered; the families are
    never cleared or have children removed, so a remembered child stays the one to use."""

    _by_values: dict[tuple[Any, ...], Any]

    def labels(self, *values: Any, **named: Any) -> Any:
        if named or not values:
            return super().labels(*values, **named)  # type: ignore[misc]
        by_values = self.__dict__.get("_by_values")
        if by_values is None:
            by_values = self._by_values = {}
        try:
            return by_values[values]
        except KeyError:
            child = by_values[values] = super().labels(*values)  # type: ignore[misc]
            return child
        except TypeError:  # an unhashable value: prometheus_client's str() of it is the label
            return super().labels(*values)  # type: ignore[misc]


class Counter(_ChildrenByValues, prometheus_client.Counter):
    pass


class Gauge(_ChildrenByValues, prometheus_client.Gauge):
    pass


class Histogram(_ChildrenByValues, prometheus_client.Histogram):
    pass

# LLM calls take seconds to minutes: the default buckets stop at 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The gateway's own time per request is milliseconds; finer buckets at the low end.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# HTTP layer (MetricsMiddleware). `path` is the route template, never the raw URL.
http_requests_total = Counter(
    "http_requests_total", "Total number of HTTP requests", ["method", "path", "status"])
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds", "HTTP request latency in seconds (streams: until the last byte)",
    ["method", "path"], buckets=LATENCY_BUCKETS)
http_request_size_bytes = Histogram(
    "http_request_size_bytes", "HTTP request body size in bytes", ["method", "path"], buckets=SIZE_BUCKETS)
http_response_size_bytes = Histogram(
    "http_response_size_bytes", "HTTP response body size in bytes", ["method", "path"], buckets=SIZE_BUCKETS)
gateway_overhead_seconds = Histogram(
    "gateway_overhead_seconds",
    "Time a request that called a provider spent in the gateway itself, excluding the upstream wait",
    ["path"], buckets=OVERHEAD_BUCKETS)

# Providers (responses_app.providers.instrumented.InstrumentedProvider): one sample per upstream attempt.
provider_requests_total = Counter(
    "provider_requests_total", "Provider API calls", ["provider", "model", "operation", "status"])
provider_request_duration_seconds = Histogram(
    "provider_request_duration_seconds", "Provider call latency in seconds (streams: until the last event)",
    ["provider", "model", "operation"], buckets=LATENCY_BUCKETS)
provider_tokens_total = Counter(
    "provider_tokens_total", "Tokens reported by providers", ["provider", "model", "type"])
provider_cost_usd_total = Counter(
    "provider_cost_usd_total", "Cost of provider calls in USD at the configured model prices",
    ["provider", "model"])
provider_stream_ttfb_seconds = Histogram(
    "provider_stream_ttfb_seconds", "Time to the first streamed event from a provider",
    ["provider", "model"], buckets=LATENCY_BUCKETS)
provider_stream_chunks_total = Counter(
    "provider_stream_chunks_total", "Stream events received from providers", ["provider", "model"])
provider_stream_duration_seconds = Histogram(
    "provider_stream_duration_seconds", "Total duration of provider streams",
    ["provider", "model"], buckets=LATENCY_BUCKETS)

# Conversation store (conversations_app.instrumented.InstrumentedStore).
conversation_operations_total = Counter(
    "conversation_operations_total", "Conversation store operations", ["operation", "backend", "status"])
conversation_operation_duration_seconds = Histogram(
    "conversation_operation_duration_seconds", "Conversation store operation latency in seconds",
    ["operation", "backend"], buckets=STORE_BUCKETS)

# Circuit breakers (responses_app.providers.resilience), one per provider entry and upstream model.
# `livemax`: in multiprocess mode a scrape shows the worst state any live worker's breaker is in.
circuit_breaker_state = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per provider entry and upstream model: 0 closed, 1 open, 2 half-open.",
    ["provider", "model"], multiprocess_mode="livemax")
circuit_breaker_state_transitions_total = Counter(
    "circuit_breaker_state_transitions", "Circuit breaker state changes per provider entry and upstream model.",
    ["provider", "model", "from", "to"])

# Turns (responses_app.pipeline and responses_app.worker_lifecycle).
turns_in_flight = Gauge(
    "gateway_turns_in_flight", "Turns this worker is running now (opened, not yet settled).",
    multiprocess_mode="livesum")
upstream_calls_in_flight = Gauge(
    "gateway_upstream_calls_in_flight", "Upstream calls this worker's helpers are reading now, including "
    "abandoned ones that have not ended yet (responses_app.providers.guard).", multiprocess_mode="livesum")
websocket_connections = Gauge(
    "gateway_websocket_connections", "WebSocket connections open on /v1/responses (docs/api.md#websocket-mode).",
    multiprocess_mode="livesum")
turns_recovered_total = Counter(
    "gateway_turns_recovered", "Turns left in_progress that were settled by someone other than their own "
    "request: `worker_lost` (its worker died), `expired` (older than any turn can run), `deferred` (stored "
    "later, after the database came back).", ["reason"])

# Rate limiting (identity_app.limiter and gateway_project.middleware.ratelimit).
RATE_LIMIT_DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
rate_limit_rejections_total = Counter(
    "rate_limit_rejections", "Requests refused by the gateway's rate limiter.",
    ["scope"],  # requests | tokens | backend_unavailable
)
rate_limit_decision_seconds = Histogram(
    "rate_limit_decision_seconds", "Time to take one rate-limit decision (a Redis round trip when Redis is used).",
    buckets=RATE_LIMIT_DECISION_BUCKETS,
)
rate_limit_backend_errors_total = Counter(
    "rate_limit_backend_errors", "Rate-limit decisions that could not reach Redis.",
    ["outcome"],  # fail_open | fail_closed
)

UNMATCHED_PATH = "unmatched"
_CONVERTER = re.compile(r"<(?:[^>:]+:)?([^>]+)>")


def observe_request(method: str, route: str | None, status: int, elapsed: float, *, request_size: int,
                    response_size: int, upstream_seconds: float) -> None:
    """One request in the seed's http_* families (a WebSocket's response.create counts as one,
    with method `WEBSOCKET`), and the gateway's own share of its time."""
    path = route_label(route)
    http_requests_total.labels(method, path, str(status)).inc()
    http_request_duration_seconds.labels(method, path).observe(elapsed)
    http_request_size_bytes.labels(method, path).observe(request_size)
    http_response_size_bytes.labels(method, path).observe(response_size)
    if upstream_seconds > 0:
        gateway_overhead_seconds.labels(path).observe(max(0.0, elapsed - upstream_seconds))


def route_label(route: str | None) -> str:
    """`v1/responses/<str:response_id>` -> `/v1/responses/{response_id}`; no route -> a fixed label.

    Only URL patterns the gateway defines can appear, so the label's cardinality is bounded by
    the URLconf whatever clients send.
    """
    if not route:
        return UNMATCHED_PATH
    return "/" + _CONVERTER.sub(r"{\1}", route).lstrip("^").rstrip("$")


class ActiveConversationsCollector(Collector):
    """`conversation_active_count{backend}`, read from the database at scrape time.

    Counting in the database (conversations with a turn within `conversations.ttl`) is right
    across any number of workers and restarts, where per-worker inc/dec would drift. The count is
    cached for `cache_seconds` so frequent scrapes cost one query per worker per window.
    """

    def __init__(self, count: Callable[[], tuple[str, int]], cache_seconds: float = 5.0) -> None:
        self._count = count
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, str, int] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("conversation_active_count",
                                   "Conversations with a turn within conversations.ttl", labels=["backend"])
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._cache_seconds:
                try:
                    backend, value = self._count()
                except Exception:  # a scrape must not fail because the database is down
                    logger.warning("could not count active conversations for /metrics", exc_info=True)
                    return [family]
                self._cached = (now, backend, value)
            _, backend, value = self._cached
        family.add_metric([backend], value)
        return [family]


def _count_active() -> tuple[str, int]:
    from django.conf import settings

    from conversations_app.store import release_connection, store

    try:
        return store.backend, store.active_count(settings.GATEWAY.conversations.ttl)
    finally:
        release_connection()


active_conversations = ActiveConversationsCollector(_count_active)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """The text exposition for one scrape: every family of every worker (the gateway's and
    django-prometheus's), plus the active gauge."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(active_conversations)
    return generate_latest(registry)
