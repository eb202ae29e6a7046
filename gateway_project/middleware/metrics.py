"""HTTP metrics: count, latency, sizes, and the gateway's own overhead, labelled by route template."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.middleware import sync_streaming_content
from gateway_project.observability import context, metrics, metrics_enabled

# Clients choose the method string; only known ones become label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _content_length(request: HttpRequest) -> int:
    value = request.META.get("CONTENT_LENGTH") or ""
    return int(value) if value.isdigit() else 0


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        if not metrics_enabled():
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        if isinstance(response, StreamingHttpResponse):
            response.streaming_content = self._observe_stream(request, response, sync_streaming_content(response),
                                                             started)
        else:
            self._observe(request, response, started, len(response.content))
        return response

    def _observe_stream(self, request: HttpRequest, response: StreamingHttpResponse, content: Iterator[bytes],
                        started: float) -> Iterator[bytes]:
        size = 0
        try:
            for chunk in content:
                size += len(chunk)
                yield chunk
        finally:
            self._observe(request, response, started, size)

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponse | StreamingHttpResponse, started: float,
                 response_size: int) -> None:
        elapsed = time.perf_counter() - started
        match = request.resolver_match
        path = metrics.route_label(match.route if match else None)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.http_requests_total.labels(method, path, str(response.status_code)).inc()
        metrics.http_request_duration_seconds.labels(method, path).observe(elapsed)
        metrics.http_request_size_bytes.labels(method, path).observe(_content_length(request))
        metrics.http_response_size_bytes.labels(method, path).observe(response_size)
        scope = context.current.get()
        if scope is not None and scope.upstream_seconds > 0:
            metrics.gateway_overhead_seconds.labels(path).observe(max(0.0, elapsed - scope.upstream_seconds))
