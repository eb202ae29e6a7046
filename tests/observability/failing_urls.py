"""The gateway's URLconf plus views that fail, for the tests of how the server span reports errors."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, StreamingHttpResponse
from django.urls import include, path


def crash(request: HttpRequest) -> StreamingHttpResponse:
    raise RuntimeError("kaboom")


def crash_mid_stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"first"
        raise ValueError("mid-stream")

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("v1/crash", crash),
    path("internal/crash", crash),
    path("internal/crash-mid-stream", crash_mid_stream),
    path("", include("gateway_project.urls")),
]
