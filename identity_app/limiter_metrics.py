"""Rate-limiter metrics, on prometheus_client's default registry (exposed at the metrics path)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REJECTIONS = Counter(
    "rate_limit_rejections", "Requests refused by the gateway's rate limiter.",
    ["scope"],  # requests | tokens | backend_unavailable
)
DECISION_SECONDS = Histogram(
    "rate_limit_decision_seconds", "Time to take one rate-limit decision (a Redis round trip when Redis is used).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BACKEND_ERRORS = Counter(
    "rate_limit_backend_errors", "Rate-limit decisions that could not reach Redis.",
    ["outcome"],  # fail_open | fail_closed
)
