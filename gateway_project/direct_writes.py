"""Writes to a streaming response's client outside its iterator: the WSGI server's own `write`.

PEP 3333's `start_response` returns a `write(data)` callable that writes to the client at once
(imperative writing); Django never uses it. An SSE stream whose upstream is read by the request
itself (responses_app.providers.guard, after the first event) uses it for the keep-alives it sends
while the request waits on a silent upstream: the request's own greenlet is blocked in that read,
so a timer writes them. It is safe because of when it writes: while the request waits on the
upstream, the server is waiting for the iterator's next chunk and is not writing; and the guard
holds the request back from handing its next chunk over until a keep-alive under way is written,
so the two writes never meet on the socket.

Only a real server gives one (gunicorn); Django's test client calls no `start_response`, and a
stream there keeps its keep-alives in the iterator (the guard's helper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.http import HttpRequest

_ENVIRON_KEY = "gateway.direct_write"


class DirectWrite:
    """The request's `write`, once the server has started the response, and the bytes it wrote."""

    __slots__ = ("_write", "written")

    def __init__(self) -> None:
        self._write: Callable[[bytes], Any] | None = None
        self.written = 0

    def __call__(self, data: bytes) -> bool:
        """Write `data` to the client now; False when it could not be (no response started, the
        client gone: the stream's own next write, or the client watch, finds that out)."""
        write = self._write
        if write is None:
            return False
        try:
            write(data)
        except OSError:
            return False
        self.written += len(data)
        return True


def with_direct_writes(app: WSGIApplication) -> WSGIApplication:
    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        direct = environ[_ENVIRON_KEY] = DirectWrite()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            write = start_response(status, headers, exc_info)
            direct._write = write
            return write

        return app(environ, start)

    return application


def direct_write(request: HttpRequest) -> DirectWrite | None:
    """The request's direct write, when its server gives one."""
    return request.META.get(_ENVIRON_KEY)
