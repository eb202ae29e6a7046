"""Render every error on API routes as an OpenAI error body: never an HTML page, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from gateway_project.api_errors import ApiError

logger = logging.getLogger(__name__)


def is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def request_too_large() -> ApiError:
    # Also sent by gateway_project.chunked_body, for a chunked body over the limit.
    return ApiError(413, "Request body is larger than the gateway accepts (server.max_request_body_size).",
                    code="request_too_large")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ApiError):
            return exception.response()
        if isinstance(exception, RequestDataTooBig):
            return request_too_large().response()
        if is_api_path(request.path):
            logger.exception("unhandled error on %s", request.path)
            return ApiError(500, "The gateway hit an internal error.", type="server_error", code="server_error").response()
        return None
