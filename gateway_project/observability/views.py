"""The Prometheus scrape endpoint, mounted at `observability.metrics.path`."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gateway_project.observability import metrics, metrics_enabled


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_enabled():
        # The seed's troubleshooting promise: metrics off means the path does not exist.
        raise Http404
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
