"""Request id: accepted from the client when it is a safe token, generated otherwise, always returned."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def choose_request_id(incoming: str | None) -> str:
    # A client-chosen id is only echoed if it cannot inject anything into logs or headers.
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return str(uuid.uuid4())


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = choose_request_id(request.headers.get("X-Request-ID"))
        response = self.get_response(request)
        response["x-request-id"] = request.request_id
        return response
