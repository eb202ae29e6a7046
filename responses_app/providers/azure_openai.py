"""`azureopenai` provider type: Chat Completions on an Azure OpenAI resource.

The wire format is OpenAI's, so the translation is `openai_chat`'s; only the address and the
credentials differ: the model entry's `provider_model_id` is the *deployment* name, it goes in the
path with an `api-version` query parameter, and the key travels in an `api-key` header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from responses_app.providers.base import ProviderRequest
from responses_app.providers.openai_chat import OpenAIChatProvider

# The version the origin gateway defaulted to (origin-gateway.md §3).
DEFAULT_API_VERSION = "2024-12-01-preview"


class AzureOpenAIProvider(OpenAIChatProvider):
    type = "azureopenai"

    def __init__(self, key: str, entry: Any) -> None:
        super().__init__(key, entry)
        self.base = entry.endpoint.rstrip("/")
        self.api_version = entry.api_version or DEFAULT_API_VERSION

    def url_for(self, request: ProviderRequest) -> str:
        deployment = quote(request.model, safe="")
        return f"{self.base}/openai/deployments/{deployment}/chat/completions?api-version={self.api_version}"

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": "application/json", "api-key": self.entry.api_key}
