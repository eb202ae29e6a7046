"""Render every error on API routes as an OpenAI error body (Anthropic's on its Messages API paths):
never an HTML page, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeGuard

from django.core.exceptions import RequestDataTooBig
from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.api_errors import ApiError, ApiErrorResponse, is_anthropic_path
from gateway_project.db_backends.postgresql.base import PoolBusy
from gateway_project.request_notes import notes_of

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying while the database is unavailable. A Postgres
# restart takes a few seconds and the SDK retries 503s with backoff anyway; one second keeps
# retries from piling up without making a brief blip look like a long outage.
DATABASE_RETRY_AFTER = "1"


def is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def is_database_unavailable(exception: BaseException | None) -> TypeGuard[OperationalError | InterfaceError]:
    """Django's wrappers for "no usable connection": pool timeout, refused/lost connection.

    Both are errors of the moment, not of the request, so the client should retry, not give up.
    """
    return isinstance(exception, (OperationalError, InterfaceError))


def database_unavailable(request: HttpRequest, exception: BaseException) -> HttpResponse:
    return database_unavailable_error(exception, f"{request.method} {request.path}").response()


def database_unavailable_error(exception: BaseException, where: str) -> ApiError:
    """The 503 for a request that found no usable database connection (`where`: for the log)."""
    # One line per request: during an outage every request fails the same way, and a traceback
    # each would bury the first useful line of the log.
    first_line = str(exception).strip().splitlines()[0] if str(exception).strip() else ""
    logger.warning("database unavailable on %s: %s: %s", where, type(exception).__name__, first_line)
    if isinstance(exception.__cause__, PoolBusy):
        # Postgres answers, but every pooled connection stayed busy: say so, it is a sizing problem.
        return ApiError(503, "The gateway's database is busy. Retry shortly.", type="server_error",
                        code="database_busy", headers={"Retry-After": DATABASE_RETRY_AFTER})
    return ApiError(
        503, "The gateway's database is unavailable. Retry shortly.",
        type="server_error", code="database_unavailable", headers={"Retry-After": DATABASE_RETRY_AFTER},
    )


def internal_error(exception: BaseException, where: str) -> ApiError:
    logger.error("unhandled error on %s", where, exc_info=exception)
    return ApiError(500, "The gateway hit an internal error.", type="server_error", code="server_error")


def request_too_large() -> ApiError:
    # Also sent by gateway_project.chunked_body, for a chunked body over the limit.
    return ApiError(413, "Request body is larger than the gateway accepts (server.max_request_body_size).",
                    code="request_too_large")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        response = self.get_response(request)
        # The one place an error answer gets its API's shape: every error on the way out passes
        # here, those of the middleware inside (auth's 401, the rate limiter's 429) included.
        if isinstance(response, ApiErrorResponse):
            response.shape_for(request.path)
        if is_anthropic_path(request.path):
            # Anthropic's SDK reads the request id from `request-id` (APIStatusError.request_id).
            response["request-id"] = notes_of(request).request_id
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ApiError):
            return exception.response()
        if isinstance(exception, RequestDataTooBig):
            return request_too_large().response()
        if is_api_path(request.path):
            if is_database_unavailable(exception):
                return database_unavailable(request, exception)
            return internal_error(exception, request.path).response()
        return None
