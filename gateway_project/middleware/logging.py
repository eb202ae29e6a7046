"""Request id and request logging: the outermost middleware, so every later log line and span has the id.

`X-Request-ID` is accepted from the client when it is a safe token (it ends up in logs and
headers), replaced by a fresh UUID otherwise, and returned on every response. One access line is
logged per request when it finishes (for streams: when the last byte is sent).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.middleware import StreamEnd, when_stream_ends
from gateway_project.observability import context
from gateway_project.request_notes import notes_of

logger = logging.getLogger("gateway.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def choose_request_id(incoming: str | None) -> str:
    # A client-chosen id is only echoed if it cannot inject anything into logs or headers.
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return str(uuid.uuid4())


class LoggingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        notes = notes_of(request)
        notes.request_id = choose_request_id(request.headers.get("X-Request-ID"))
        context.current.set(context.RequestScope(notes.request_id))
        started = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = notes.request_id
        if isinstance(response, StreamingHttpResponse):
            def log(_end: StreamEnd) -> None:
                self._log(request, response, started)
                context.current.set(None)

            when_stream_ends(response, log)
        else:
            self._log(request, response, started)
            context.current.set(None)
        return response

    @staticmethod
    def _log(request: HttpRequest, response: HttpResponse | StreamingHttpResponse, started: float) -> None:
        # The tracing middleware has ended its span by now; it left the ids on the request.
        span_context = notes_of(request).trace_span_context
        ids = {}
        if span_context is not None and span_context.trace_flags.sampled:
            ids = {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}
        match = request.resolver_match
        fields = {"method": request.method, "path": request.path, "route": match.route if match else None,
                  "status": response.status_code, "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                  **ids}
        error = getattr(response, "api_error", None)
        if error is not None:
            # Why the gateway said no, on the same line: an operator sees what the client saw.
            fields.update(error_type=error.type, error_code=error.code, error_param=error.param,
                          error_message=error.message[:300])
        logger.info("request", extra=fields)
