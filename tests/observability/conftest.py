from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from prometheus_client import REGISTRY

from gateway_project.config import GatewayConfig
from gateway_project.observability import metrics, tracing
from gateway_project.observability.logging import CorrelationFilter, JsonFormatter
from tests.conftest import ApiClient, gateway_config_for
from tests.fakes.openai_upstream import FakeOpenAI

PRICED_MODELS = [
    {"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini-upstream",
     "pricing": {"input": 0.15, "output": 0.60}},
    {"name": "demo", "provider": "demo"},
]


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    return process_span_exporter()


@functools.cache
def process_span_exporter() -> InMemorySpanExporter:
    """One tracer provider per process (OpenTelemetry allows no other), exporting to memory. Cached
    here, not only by the session scope: a conftest that imports the fixture (tests/surfaces) makes a
    second fixture of it, whose provider OpenTelemetry would refuse to install."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(tracing.RequestIdSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    span_exporter.clear()
    yield span_exporter
    span_exporter.clear()


def observed_config(openai_url: str, *, metrics_on: bool = True, tracing_on: bool = True,
                    enabled: bool = True) -> GatewayConfig:
    return gateway_config_for(openai_url, models=PRICED_MODELS, observability={
        "enabled": enabled, "metrics": {"enabled": metrics_on, "path": "/metrics"},
        "tracing": {"enabled": tracing_on, "sampler": {"type": "always"}},
    })


@pytest.fixture
def observed(settings: Any, fake_openai: FakeOpenAI, span_exporter: InMemorySpanExporter) -> GatewayConfig:
    settings.GATEWAY = observed_config(fake_openai.url)
    metrics.active_conversations._cached = None
    return settings.GATEWAY


@pytest.fixture
def client(db: None, observed: GatewayConfig) -> ApiClient:
    return ApiClient()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the gateway logs, formatted as JSON lines exactly as `logging.format: json` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CorrelationFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
