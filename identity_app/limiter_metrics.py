"""Old home of the rate-limiter metric families, kept as a re-export for importers not yet moved.

The families live in gateway_project/observability/metrics.py with every other family the
gateway defines; import them from there.
"""

from __future__ import annotations

from gateway_project.observability.metrics import rate_limit_backend_errors_total as BACKEND_ERRORS
from gateway_project.observability.metrics import rate_limit_decision_seconds as DECISION_SECONDS
from gateway_project.observability.metrics import rate_limit_rejections_total as REJECTIONS

__all__ = ["BACKEND_ERRORS", "DECISION_SECONDS", "REJECTIONS"]
