"""gateway_project.chunked_body, called as WSGI directly (tests/e2e/test_chunked_body.py runs it
under gunicorn)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from gateway_project.chunked_body import with_chunked_bodies
from tests.conftest import gateway_config_for


class _App:
    """Records the environ it was called with."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


class _OneShotStream(io.BytesIO):
    """Like gunicorn's Body: read(n) may return fewer bytes; b"" at the end of the body."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(size, 1000) if size and size > 0 else size)


def _environ(body: bytes, **extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/responses", "wsgi.input": _OneShotStream(body), **extra}


CHUNKED = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}


@pytest.fixture
def limit(settings: Any) -> int:
    settings.GATEWAY = gateway_config_for("http://127.0.0.1:9", server={"max_request_body_size": 5000})
    return 5000


def _call(environ: dict[str, Any]) -> tuple[_App, str, dict[str, str], bytes]:
    app = _App()
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, {k.lower(): v for k, v in headers}

    content = b"".join(with_chunked_bodies(app)(environ, start_response))
    return app, seen["status"], seen["headers"], content


def test_a_body_with_a_content_length_passes_untouched(limit):
    environ = _environ(b"x" * 10_000, CONTENT_LENGTH="10000", **CHUNKED)
    stream = environ["wsgi.input"]
    app, _, _, _ = _call(environ)
    assert app.environ is environ and app.environ["wsgi.input"] is stream
    assert stream.tell() == 0  # not a byte read, though it is over the limit: Django enforces that


def test_a_chunked_body_is_handed_over_with_its_length(limit):
    app, status, _, _ = _call(_environ(b"y" * limit, **CHUNKED))
    assert status == "200 OK"
    assert app.environ is not None
    assert app.environ["CONTENT_LENGTH"] == str(limit)
    assert app.environ["wsgi.input"].read() == b"y" * limit
    assert "HTTP_TRANSFER_ENCODING" not in app.environ


def test_a_chunked_body_over_the_limit_is_a_json_413(limit):
    app, status, headers, content = _call(_environ(b"z" * (limit + 1), **CHUNKED))
    assert app.environ is None
    assert status.startswith("413 ")
    assert headers["content-type"] == "application/json"
    assert headers["x-should-retry"] == "false"
    assert json.loads(content)["error"]["code"] == "request_too_large"


def test_without_a_terminated_input_nothing_is_read(limit):
    # wsgiref/runserver: reading to the end of a raw socket would hang, so it is left alone.
    environ = _environ(b"{}", HTTP_TRANSFER_ENCODING="chunked")
    _call(environ)
    assert "CONTENT_LENGTH" not in environ and environ["wsgi.input"].tell() == 0
