"""The HTTP server span of each request, built on OpenTelemetry's public API.

One SERVER span per request, named `METHOD route` (`POST v1/responses`; the method alone when no
route matches, `HTTP` for a non-standard method). Its parent is the caller's W3C `traceparent`
when there is one, and the tracer provider's parent-based sampler decides whether it is recorded
(gateway_project/observability/tracing.py). The middleware sits where the seed puts it, after the
request-id middleware, so the span carries `http.request_id`.

The span is the current span while the rest of the chain and the view run, so provider and store
spans are its children. For a StreamingHttpResponse it stays open, and current, until the last
byte is sent: the store write at the end of a stream belongs to the same trace, and the span's
duration is the real one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import Token

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import Resolver404, resolve
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.wsgi import add_response_attributes, collect_request_attributes, wsgi_getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway_project.middleware import StreamEnd, when_stream_ends
from gateway_project.observability import tracing, tracing_enabled
from gateway_project.request_notes import notes_of

# The HTTP methods of the semantic conventions; any other becomes span name `HTTP`, so a client
# cannot mint span names.
_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


def route_of(request: HttpRequest) -> str | None:
    """The route template the request's path matches (`v1/responses/<str:response_id>`), if any.

    Known before the view runs, so the span is named at its start, as the conventions ask.
    """
    return _route_of_path(request.path_info)


@functools.lru_cache(maxsize=1024)
def _route_of_path(path: str) -> str | None:
    # Django resolves the path again for the view; remembering the answer for the paths seen
    # most (POST /v1/responses on every turn) saves walking the URLconf twice per request.
    try:
        return resolve(path).route or None
    except Resolver404:
        return None


def span_name(method: str, route: str | None) -> str:
    if method not in _METHODS:
        return "HTTP"
    return f"{method} {route}" if route else method


class TracingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        if not tracing_enabled():
            raise MiddlewareNotUsed
        tracing.ensure_started(settings.GATEWAY.observability.tracing)
        self.get_response = get_response
        self.tracer = tracing.tracer()

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        span, token = self._start(request)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            # Django turns errors below into responses, so this is rare; the span must end anyway.
            self._end(request, span, token, None, exc)
            raise
        if isinstance(response, StreamingHttpResponse):
            def end(stream: StreamEnd) -> None:
                # A client that went away is not an error of the gateway's: only the end.
                self._end(request, span, token, response, stream.failure)

            when_stream_ends(response, end)
        else:
            self._end(request, span, token, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Django calls this for a view's exception that no middleware below turned into a
        # response (ApiErrorMiddleware answers those on API paths first, with a 5xx the span
        # reports as an error anyway). Recorded when the span ends, after the status code.
        notes_of(request).view_exception = exception

    def _start(self, request: HttpRequest) -> tuple[Span, Token[Context]]:
        # A fresh context from the headers alone: nothing left current by an earlier request on
        # this thread or greenlet can become this request's parent.
        parent = propagate.extract(request.META, getter=wsgi_getter)
        route = route_of(request)
        span = self.tracer.start_span(span_name(request.method or "", route), context=parent, kind=SpanKind.SERVER)
        notes = notes_of(request)
        notes.trace_span_context = span.get_span_context()
        if span.is_recording():
            # Collected only for sampled requests: an unsampled one pays for the span, not these.
            attributes = {k: v for k, v in collect_request_attributes(request.META).items() if v is not None}
            if route:
                attributes["http.route"] = route
            attributes["http.request_id"] = notes.request_id
            span.set_attributes(attributes)
        token = context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def _end(self, request: HttpRequest, span: Span, token: Token[Context],
             response: HttpResponse | StreamingHttpResponse | None, failure: BaseException | None = None) -> None:
        try:
            if response is not None and span.is_recording():
                # http.status_code, and an error status for 5xx (a 4xx is the client's error).
                add_response_attributes(span, f"{response.status_code} {response.reason_phrase}",
                                        list(response.items()))
            failure = failure or notes_of(request).view_exception
            if failure is not None:
                span.record_exception(failure)
                span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))
        finally:
            span.end()
            context.detach(token)
