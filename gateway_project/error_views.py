from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from gateway_project.api_errors import ApiError


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return ApiError(404, f"No route for {request.method} {request.path}.", code="not_found").response()


def server_error(request: HttpRequest) -> HttpResponse:
    return ApiError(500, "The gateway hit an internal error.", type="server_error", code="server_error").response()
