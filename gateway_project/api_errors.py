"""API errors: one exception type, rendered in exactly one place.

Views and services raise `ApiError`; `gateway_project.middleware.errors.ApiErrorMiddleware`
turns it into `{"error": {"message", "type", "param", "code"}}` with the right status. On the paths
of Anthropic's Messages API (`/v1/messages...`, surfaces_app.anthropic_messages), whose clients
parse Anthropic's shape, the same error is `{"type": "error", "error": {"type", "message"}}`
(`ApiErrorResponse.shape_for`): the middleware reshapes every error answer there, whoever made it
(a view, auth, the rate limiter, a database outage).
"""

from __future__ import annotations

import json
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

    def shape_for(self, path: str) -> None:
        """Give the body the error shape of the API that `path` belongs to (headers stay as they are)."""
        if is_anthropic_path(path):
            self.content = json.dumps(anthropic_body(self.api_error)).encode()
            if self.has_header("Content-Length"):
                self["Content-Length"] = str(len(self.content))


def is_anthropic_path(path: str) -> bool:
    """Anthropic's Messages API: `/v1/messages` and `/v1/messages/count_tokens`."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


# Anthropic's error types by status (docs.anthropic.com "Errors"); the SDK picks its exception
# class by status, the type is what a caller reads. 499 (the client left) and 5xx other than 503
# are the gateway's or the upstream's failure: `api_error`; 503 (database or upstream unavailable)
# is Anthropic's "overloaded" in meaning, though sent with the gateway's own status.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                    422: "invalid_request_error", 429: "rate_limit_error", 499: "api_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def anthropic_body(error: ApiError) -> dict[str, Any]:
    """`error` as Anthropic's ErrorResponse (also a stream's `event: error` data)."""
    kind = _ANTHROPIC_TYPES.get(error.status) or ("invalid_request_error" if error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


# Statuses the standard library has no phrase for.
_REASONS = {499: "Client Closed Request"}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, code="not_found")


def server_error(status: int, message: str, code: str = "server_error") -> ApiError:
    return ApiError(status, message, type="server_error", code=code)
