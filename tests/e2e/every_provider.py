"""One fake upstream of each provider type and a gateway config that routes a model to each:
`chat-model` (Chat Completions), `responses-model` (the upstream's own Responses API), `claude`
(Anthropic), `gemini` (Google). Shared by end-to-end tests that run on every provider type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet

from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import FakeServer


def config_yaml(fakes: dict[str, FakeServer]) -> str:
    quick = "read_timeout: 10, retry: {max_retries: 0}"
    return f"""
logging: {{format: text, level: warn}}
providers:
  chat: {{type: openai, api_key: sk-chat, endpoint: "{fakes['chat'].url}/v1", {quick}}}
  responses: {{type: openai, api: responses, api_key: sk-resp, endpoint: "{fakes['responses'].url}/v1", {quick}}}
  anthropic: {{type: anthropic, api_key: sk-ant, endpoint: "{fakes['anthropic'].url}", {quick}}}
  google: {{type: google, api_key: goog, endpoint: "{fakes['google'].url}/v1beta", {quick}}}
models:
  - {{name: chat-model, provider: chat, provider_model_id: gpt-upstream}}
  - {{name: responses-model, provider: responses, provider_model_id: gpt-responses-upstream}}
  - {{name: claude, provider: anthropic, provider_model_id: claude-upstream}}
  - {{name: gemini, provider: google, provider_model_id: gemini-upstream}}
"""


# Fixtures, offered to every end-to-end test by tests/e2e/conftest.py.

@pytest.fixture(scope="module")
def provider_fakes() -> Iterator[dict[str, FakeServer]]:
    servers: dict[str, FakeServer] = {"chat": chat.FakeOpenAI(), "responses": resp.FakeOpenAIResponses(),
                                      "anthropic": anth.FakeAnthropic(), "google": gem.FakeGemini()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def provider_gateway(provider_fakes: dict[str, FakeServer]) -> Iterator[GatewayProcess]:
    """Two workers, with a compaction key from the environment (responses_app.compaction)."""
    keys = {"GATEWAY_COMPACTION_KEYS": Fernet.generate_key().decode()}
    with GatewayProcess(config_yaml(provider_fakes), env=keys) as gw:
        yield gw
