from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client

from gateway_project.config import GatewayConfig, parse_config
from tests.fakes.openai_upstream import FakeOpenAI

if TYPE_CHECKING:
    # The test client's response type, which exists only in django-stubs.
    from django.test.client import _MonkeyPatchedWSGIResponse


@pytest.fixture(scope="session", autouse=True)
def _key_listener_closed_before_teardown(django_db_setup: None) -> Iterator[None]:
    """The API-key cache's listening connection (identity_app.key_cache) would keep the test
    database open, and pytest-django could not drop it."""
    yield
    from identity_app.key_cache import reset_key_cache

    reset_key_cache()


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def fake_openai(_fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _fake_openai_server.reset()
    yield _fake_openai_server
    _fake_openai_server.reset()


def gateway_config_for(openai_url: str, **overrides: Any) -> GatewayConfig:
    """The suite's standard gateway: model `gpt-test` on the fake OpenAI upstream, plus `demo`."""
    data: dict[str, Any] = {
        "server": {"max_request_body_size": 65536},
        "logging": {"format": "text", "level": "warn"},
        "providers": {
            # No retries: a scripted failure reaches the client as is (tests/resilience covers retries).
            "openai": {"type": "openai", "api_key": "sk-test-upstream-key", "endpoint": f"{openai_url}/v1",
                       "connect_timeout": 2, "read_timeout": 5, "retry": {"max_retries": 0}},
            "demo": {"type": "demo"},
        },
        "models": [
            {"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini-upstream"},
            {"name": "demo", "provider": "demo"},
        ],
    }
    for section, value in overrides.items():
        data[section] = value
    return parse_config(data)


@pytest.fixture
def gateway(settings: Any, fake_openai: FakeOpenAI) -> GatewayConfig:
    settings.GATEWAY = gateway_config_for(fake_openai.url)
    return settings.GATEWAY


class ApiClient:
    """Django's test client speaking JSON to the API, as the SDK does."""

    def __init__(self) -> None:
        self.client = Client()

    def post(self, path: str, body: Any, **headers: Any) -> _MonkeyPatchedWSGIResponse:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.post(path, data=data, content_type="application/json", headers=headers)

    def create(self, **body: Any) -> _MonkeyPatchedWSGIResponse:
        return self.post("/v1/responses", body)

    def get(self, path: str, **params: Any) -> _MonkeyPatchedWSGIResponse:
        return self.client.get(path, params)

    def delete(self, path: str) -> _MonkeyPatchedWSGIResponse:
        return self.client.delete(path, content_type="application/json")


@pytest.fixture
def api(db: None, gateway: GatewayConfig) -> ApiClient:
    return ApiClient()


def sse_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The SSE frames of a streamed response's chunks, read lazily. A chunk (one write) may hold
    several frames, but only whole ones."""
    for chunk in chunks:
        assert chunk.endswith(b"\n\n"), f"a write ends with a whole frame: {chunk!r}"
        for frame in chunk.split(b"\n\n")[:-1]:
            yield frame + b"\n\n"


def sse_events(response: Any) -> list[dict[str, Any]]:
    """Parse a streamed Django response into its events, checking the framing on the way."""
    raw = b"".join(response.streaming_content).decode()
    assert "\r" not in raw, "frames must use LF only"
    events = []
    for frame in raw.split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2, frame
        data = json.loads(lines[1].removeprefix("data: "))
        assert lines[0].removeprefix("event: ") == data["type"]
        events.append(data)
    return events
