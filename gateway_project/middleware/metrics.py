"""HTTP metrics: count, latency, sizes, and the gateway's own overhead, labelled by route template."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.middleware import StreamEnd, when_stream_ends
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
            def observe(end: StreamEnd) -> None:
                self._observe(request, response, started, end.size)

            when_stream_ends(response, observe)
        else:
            self._observe(request, response, started, len(response.content))
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponse | StreamingHttpResponse, started: float,
                 response_size: int) -> None:
        match = request.resolver_match
        scope = context.current.get()
        metrics.observe_request(request.method if request.method in _METHODS else "OTHER",
                                match.route if match else None, response.status_code,
                                time.perf_counter() - started, request_size=_content_length(request),
                                response_size=response_size, upstream_seconds=scope.upstream_seconds if scope else 0.0)
