"""Observability: Prometheus metrics, OpenTelemetry traces and correlated JSON logs.

What each signal records is documented for users in docs/observability.md. The switches live in
the YAML config (`observability:`); these helpers read them at call time so a test or a reload
that swaps `settings.GATEWAY` is honoured everywhere at once.
"""

from __future__ import annotations


def metrics_enabled() -> bool:
    # Imported here, not at module level: gunicorn's master imports gunicorn_hooks from this
    # package, and must not touch Django before forking.
    from django.conf import settings

    obs = settings.GATEWAY.observability
    return obs.enabled and obs.metrics.enabled


def tracing_enabled() -> bool:
    from django.conf import settings

    obs = settings.GATEWAY.observability
    return obs.enabled and obs.tracing.enabled
