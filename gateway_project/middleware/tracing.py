"""The HTTP server span, from opentelemetry-instrumentation-django, placed where the seed puts it.

`DjangoInstrumentor().instrument()` would insert its middleware at the top of MIDDLEWARE, above
the request-id middleware; subclassing it and listing this class in settings keeps the seed's
order (logging -> tracing -> metrics). The span gets `http.request_id`; for streamed responses it
stays open, and current, until the last byte, so spans and logs of the whole stream belong to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware
from opentelemetry.trace import Span

from gateway_project.observability import tracing, tracing_enabled
from gateway_project.request_notes import notes_of


def _on_request(span: Span, request: HttpRequest) -> None:
    notes = notes_of(request)
    notes.trace_span_context = span.get_span_context()
    if span.is_recording():
        span.set_attribute("http.request_id", notes.request_id)


def _instrument_once() -> None:
    """Configure the instrumentation's tracer and hooks without letting it edit MIDDLEWARE."""
    instrumentor = DjangoInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    listed = settings.MIDDLEWARE
    settings.MIDDLEWARE = list(listed)  # it inserts into this copy, which is then discarded
    try:
        instrumentor.instrument(request_hook=_on_request)
    finally:
        settings.MIDDLEWARE = listed


class TracingMiddleware(_DjangoMiddleware):
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not tracing_enabled():
            raise MiddlewareNotUsed
        tracing.ensure_started(settings.GATEWAY.observability.tracing)
        _instrument_once()
        super().__init__(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.process_request(request)
        response = self.get_response(request)
        if isinstance(response, StreamingHttpResponse):
            response.streaming_content = self._end_after_stream(request, response, response.streaming_content)
            return response
        return self.process_response(request, response)

    def _end_after_stream(self, request: HttpRequest, response: StreamingHttpResponse,
                         content: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from content
        finally:
            self.process_response(request, response)
