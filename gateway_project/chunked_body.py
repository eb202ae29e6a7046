"""Give Django the body of a request sent with `Transfer-Encoding: chunked`.

Django reads a body up to CONTENT_LENGTH and no further, and a chunked request has no
Content-Length (requests with a generator, httpx with an iterator, curl -T -): Django saw an
empty body, and the client got a 400 for a good request. gunicorn has already decoded the chunks
and says so with `wsgi.input_terminated` (the input stream ends where the body ends), so this
wrapper reads that stream, up to the configured body size, and hands Django the body with its
length. Over the limit it answers the 413 itself, as the error middleware would.

Requests with a Content-Length, nearly all of them, pass through untouched: no buffering, no copy.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import BinaryIO
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.conf import settings

from gateway_project.middleware.errors import request_too_large

_READ_SIZE = 64 * 1024


def with_chunked_bodies(app: WSGIApplication) -> WSGIApplication:
    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _chunked_without_length(environ):
            limit = settings.GATEWAY.server.max_request_body_size
            # One byte past the limit is enough to know it is too large; the rest stays unread
            # (gunicorn drains a little of it, then drops the connection).
            body = _read_up_to(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                return _too_large(start_response, environ.get("PATH_INFO", ""))
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = io.BytesIO(body)
            # What Django now reads is a plain body of known length, no longer chunked.
            del environ["HTTP_TRANSFER_ENCODING"]
        return app(environ, start_response)

    return application


def _chunked_without_length(environ: WSGIEnvironment) -> bool:
    # Without wsgi.input_terminated the input may be the raw socket (wsgiref, runserver), and
    # reading "to the end" would wait for the client to close; those servers keep today's behaviour.
    return (
        not environ.get("CONTENT_LENGTH")
        and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        and environ.get("wsgi.input_terminated") is True
    )


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = stream.read(min(remaining, _READ_SIZE))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _too_large(start_response: StartResponse, path: str) -> Iterable[bytes]:
    # The same response as ApiErrorMiddleware's for a Content-Length body over the limit (in the
    # shape of the path's API); without X-Request-ID, which middleware adds and this answer never reaches.
    response = request_too_large().response()
    response.shape_for(path)
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    return [response.content]
