"""Model routing: a public model name -> (provider instance, upstream model id).

Provider instances hold HTTP connection pools, so they are created lazily in each worker
process (after gunicorn forks) and cached there; the registry itself is configuration only.
Provider types are referred to by dotted path, so the core never imports provider code it
does not use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings

from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.config import GatewayConfig, ModelEntry
from responses_app.providers.base import Provider

PROVIDER_CLASSES = {
    "openai": "responses_app.providers.openai_chat.OpenAIChatProvider",
    "demo": "responses_app.providers.demo.DemoProvider",
}


@dataclass(frozen=True)
class Route:
    model: ModelEntry
    provider: Provider

    @property
    def upstream_model(self) -> str:
        return self.model.upstream_model


class ProviderRegistry:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._instances: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def provider(self, key: str) -> Provider:
        with self._lock:
            if key not in self._instances:
                entry = self.config.providers[key]
                path = PROVIDER_CLASSES.get(entry.type)
                if path is None:
                    raise ApiError(503, f"Provider {key!r} has type {entry.type!r}, which this gateway version "
                                   "cannot serve yet.", type="server_error", code="provider_unavailable")
                module, _, name = path.rpartition(".")
                self._instances[key] = getattr(import_module(module), name)(key, entry)
            return self._instances[key]

    def route(self, model_name: str) -> Route:
        model = self.config.model(model_name)
        if model is None:
            raise invalid_request(f"The model '{model_name}' does not exist or is not served by this gateway.",
                                  param="model", code="model_not_found")
        return Route(model, self.provider(model.provider))

    def close(self) -> None:
        with self._lock:
            for provider in self._instances.values():
                provider.close()
            self._instances.clear()


_registry: ProviderRegistry | None = None


def get_registry() -> ProviderRegistry:
    global _registry
    if _registry is None or _registry.config is not settings.GATEWAY:
        _registry = ProviderRegistry(settings.GATEWAY)
    return _registry
