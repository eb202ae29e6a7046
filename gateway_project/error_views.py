from __future__ import annotations

import sys

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from gateway_project.api_errors import ApiError
from gateway_project.middleware.errors import database_unavailable, is_database_unavailable


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return ApiError(404, f"No route for {request.method} {request.path}.", code="not_found").response()


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # Django's answer to a SuspiciousOperation; most often a Host header ALLOWED_HOSTS does not list.
    if isinstance(exception, DisallowedHost):
        return ApiError(400, "The Host header names no host this gateway serves (ALLOWED_HOSTS).",
                        code="disallowed_host").response()
    return ApiError(400, "The request was refused as suspicious.", code="bad_request").response()


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so it is still current. A database error
    # raised by a middleware (not a view) never reaches ApiErrorMiddleware.process_exception.
    exception = sys.exc_info()[1]
    if is_database_unavailable(exception):
        return database_unavailable(request, exception)
    return ApiError(500, "The gateway hit an internal error.", type="server_error", code="server_error").response()
