"""Fixtures of the surfaces' tests: the identity tests' (a gateway config, keys, a Redis prefix), the
observability tests' (metrics on, spans) and the provider tests' fakes of every upstream type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway_project.config import GatewayConfig
from tests.identity.conftest import SHARED_REDIS, configure, make_key, redis_prefix
from tests.observability.conftest import observed, span_exporter, spans
from tests.providers.harness import _fake_servers, fakes

__all__ = ["_fake_servers", "configure", "fakes", "limited", "make_key", "observed", "redis_prefix", "span_exporter",
           "spans"]


@pytest.fixture
def limited(configure: Callable[..., GatewayConfig], redis_prefix: str, settings: Any) -> Callable[..., GatewayConfig]:
    """Auth and rate limits on (the shared Redis, this test's own key prefix)."""
    settings.REDIS_URL = SHARED_REDIS

    def apply(**rate_limit: Any) -> GatewayConfig:
        return configure(auth={"enabled": True},
                         rate_limit={"enabled": True, "redis_key_prefix": redis_prefix, **rate_limit})

    return apply
