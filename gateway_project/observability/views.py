"""The Prometheus scrape endpoint, mounted at `observability.metrics.path`."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gateway_project.api_errors import ApiError
from gateway_project.observability import metrics, metrics_enabled


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_enabled():
        # The seed's troubleshooting promise: metrics off means the path does not exist.
        raise Http404
    if request.method != "GET":
        # As on every other route: a JSON 405 naming what is allowed (a POST was a scrape).
        return ApiError(405, f"Method {request.method} is not allowed on {request.path}.", code="method_not_allowed",
                        headers={"Allow": "GET"}).response()
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
