from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway_project.config import GatewayConfig
from responses_app.providers import resilience
from tests.conftest import ApiClient
from tests.providers.harness import Fakes, _fake_servers, fakes, providers_config  # noqa: F401 - fixtures


@pytest.fixture
def configure(db: None, settings: Any, fakes: Fakes) -> Callable[..., ApiClient]:  # noqa: F811 - the fixture
    """Point the gateway at the fakes with resilience settings for the `openai` entry (and others)."""

    def apply(openai: dict[str, Any] | None = None, *, models: list[dict[str, Any]] | None = None,
              **others: dict[str, Any]) -> ApiClient:
        overrides = {"openai": openai or {}, **others}
        config: GatewayConfig = providers_config(fakes, provider_overrides=overrides, models=models)
        settings.GATEWAY = config
        return ApiClient()

    return apply


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The breakers' clock, moved by the test instead of sleeping through open_duration."""
    fake = FakeClock()
    monkeypatch.setattr(resilience, "clock", fake)
    return fake
