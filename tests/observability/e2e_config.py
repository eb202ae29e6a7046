"""The gateway config the observability end-to-end tests run under gunicorn."""

from __future__ import annotations

import json
from typing import Any


def gateway_yaml(openai_url: str, *, tracing: dict[str, Any] | None = None, metrics: bool = True,
                 extra_providers: dict[str, Any] | None = None, extra_models: list[dict[str, Any]] | None = None,
                 log_format: str = "json", log_level: str = "info") -> str:
    # JSON is valid YAML: no hand-written indentation to get wrong.
    return json.dumps({
        "logging": {"format": log_format, "level": log_level},
        "observability": {
            "enabled": True,
            "metrics": {"enabled": metrics, "path": "/metrics"},
            "tracing": tracing or {"enabled": False},
        },
        "providers": {"openai": {"type": "openai", "api_key": "x", "endpoint": f"{openai_url}/v1"},
                      **(extra_providers or {})},
        "models": [{"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini",
                    "pricing": {"input": 0.15, "output": 0.6}}, *(extra_models or [])],
    })
