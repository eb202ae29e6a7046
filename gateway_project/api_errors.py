"""OpenAI-style API errors: one exception type, rendered in exactly one place.

Views and services raise `ApiError`; `gateway_project.middleware.errors.ApiErrorMiddleware`
turns it into `{"error": {"message", "type", "param", "code"}}` with the right status.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

# Statuses where a client retry cannot help: the SDK honours `x-should-retry: false`.
_NOT_RETRYABLE = {400, 401, 403, 404, 405, 413, 422}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> ApiErrorResponse:
        response = ApiErrorResponse(self)
        if self.status in _NOT_RETRYABLE:
            response["x-should-retry"] = "false"
        for name, value in self.headers.items():
            response[name] = value
        return response


class ApiErrorResponse(JsonResponse):
    """An error answer that remembers its error, so the access log can say why (code, param, message)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.body(), status=error.status, reason=_REASONS.get(error.status))
        self.api_error = error


# Statuses the standard library has no phrase for.
_REASONS = {499: "Client Closed Request"}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, code="not_found")


def server_error(status: int, message: str, code: str = "server_error") -> ApiError:
    return ApiError(status, message, type="server_error", code=code)
