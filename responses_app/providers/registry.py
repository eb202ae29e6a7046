"""Model routing: a public model name -> (provider instance, upstream model id).

Provider instances hold HTTP connection pools, so they are created lazily in each worker
process (after gunicorn forks) and cached there; the registry itself is configuration only.
Provider types are referred to by dotted path, so the core never imports provider code it
does not use.

A route is the requested model plus its `fallbacks`, wrapped in a `ResilientProvider` (retries,
fallback, one circuit breaker per provider entry and upstream model; see resilience.py). Models
whose provider entry has no api_key are left out of routes; a model with nothing left to serve it
is a 503 that says which key to set.

Routing is also where the caller's model allow-list applies, to what is actually served: a model
is allowed when the list names it or one of its aliases, and a fallback the caller may not use is
skipped (never served behind its back).

Each concrete provider is wrapped twice: `GuardedProvider` (the call runs in a helper the request
waits on, with the timeouts and cancellation; guard.py) inside `InstrumentedProvider` (metrics and
spans per attempt; instrumented.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings

from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.config import GatewayConfig, ModelEntry
from responses_app.providers.base import Provider
from responses_app.providers.guard import GuardedProvider
from responses_app.providers.instrumented import InstrumentedProvider
from responses_app.providers.resilience import Candidate, CircuitBreaker, ResilientProvider
from responses_app.providers.scrub import remember_secret

# Who may use a model: True for every model when the caller has no allow-list (or auth is off).
ModelPolicy = Callable[[ModelEntry], bool]


def anyone(model: ModelEntry) -> bool:
    return True

# `<type>:<api>` entries take precedence over `<type>` (an openai entry with `api: responses`).
PROVIDER_CLASSES = {
    "openai": "responses_app.providers.openai_chat.OpenAIChatProvider",
    "openai:responses": "responses_app.providers.openai_responses.OpenAIResponsesProvider",
    "azureopenai": "responses_app.providers.azure_openai.AzureOpenAIProvider",
    "anthropic": "responses_app.providers.anthropic.AnthropicProvider",
    "google": "responses_app.providers.google.GoogleProvider",
    "demo": "responses_app.providers.demo.DemoProvider",
}


@dataclass(frozen=True)
class Route:
    model: ModelEntry
    provider: ResilientProvider

    @property
    def upstream_model(self) -> str:
        return self.model.upstream_model


class ProviderRegistry:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._instances: dict[str, Provider] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()
        for entry in config.providers.values():
            remember_secret(entry.api_key)

    def provider(self, key: str) -> Provider:
        with self._lock:
            if key not in self._instances:
                entry = self.config.providers[key]
                path = PROVIDER_CLASSES.get(f"{entry.type}:{entry.api}") or PROVIDER_CLASSES.get(entry.type)
                if path is None:
                    raise ApiError(503, f"Provider {key!r} has type {entry.type!r}, which this gateway version "
                                   "cannot serve yet.", type="server_error", code="provider_unavailable")
                module, _, name = path.rpartition(".")
                # Instrumented per concrete instance, inside the resilience layer: each attempt is measured.
                concrete = getattr(import_module(module), name)(key, entry)
                self._instances[key] = InstrumentedProvider(GuardedProvider(concrete))
            return self._instances[key]

    def breaker(self, key: str, upstream_model: str) -> CircuitBreaker:
        with self._lock:
            if (key, upstream_model) not in self._breakers:
                self._breakers[key, upstream_model] = CircuitBreaker(
                    key, upstream_model, self.config.providers[key].circuit_breaker)
            return self._breakers[key, upstream_model]

    def route(self, model_name: str, may_use: ModelPolicy = anyone) -> Route:
        model = self.config.model(model_name)
        if model is None or not may_use(model):
            # The same answer for a model that exists but is not allowed: a key cannot probe for others.
            raise invalid_request(f"The model '{model_name}' does not exist or is not served by this gateway.",
                                  param="model", code="model_not_found")
        candidates = []
        for choice in self.chain(model):
            entry = self.config.providers[choice.provider]
            if not entry.missing_key and (choice is model or may_use(choice)):
                candidates.append(Candidate(choice, self.provider(choice.provider),
                                            self.breaker(choice.provider, choice.upstream_model), entry.retry))
        if not candidates:
            message = self.config.providers[model.provider].missing_key_message(model.provider)
            raise ApiError(503, f"Model '{model_name}' cannot be served: {message}.", type="server_error",
                           code="provider_not_configured")
        return Route(model, ResilientProvider(candidates))

    def chain(self, model: ModelEntry) -> list[ModelEntry]:
        """The model, then its fallbacks, each once."""
        out = [model]
        for name in model.fallbacks:
            fallback = self.config.model(name)
            if fallback is not None and fallback not in out:
                out.append(fallback)
        return out

    def servable_models(self) -> list[str]:
        return [m.name for m in self.config.models
                if any(not self.config.providers[c.provider].missing_key for c in self.chain(m))]

    def close(self) -> None:
        with self._lock:
            for provider in self._instances.values():
                provider.close()
            self._instances.clear()


_registry: ProviderRegistry | None = None


def get_registry(config: GatewayConfig | None = None) -> ProviderRegistry:
    """The registry for `config` (the turn's snapshot; settings.GATEWAY by default)."""
    global _registry
    config = config or settings.GATEWAY
    if _registry is None or _registry.config is not config:
        _registry = ProviderRegistry(config)
    return _registry
