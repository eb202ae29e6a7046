"""The gateway's own configuration: the seed's `config.yaml` schema, validated at start-up.

Django settings come from the environment (see settings.py); everything about providers, models
and observability comes from this YAML file, whose path is `GATEWAY_CONFIG`. A bad file stops
start-up with one line naming the offending key (`ConfigError`), never a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROVIDER_TYPES = ("openai", "azureopenai", "anthropic", "google", "demo")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(Exception):
    """A configuration problem, phrased as one line an operator can act on."""


def parse_duration(value: Any) -> float:
    """Seconds from `30`, `"30s"`, `"15m"`, `"1h"` or `"500ms"` (Go-style strings, as the seed used)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m or 1h")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("expected a duration like 30s, 15m or 1h")


Duration = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them so they are noticed.
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    address: str = ":8080"
    max_request_body_size: int = Field(default=10 * 1024 * 1024, gt=0)

    @property
    def bind(self) -> str:
        """gunicorn's bind form: ':8080' means every interface."""
        host, _, port = self.address.rpartition(":")
        return f"{host or '0.0.0.0'}:{port}"


class LoggingConfig(_Section):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"

    @property
    def python_level(self) -> str:
        return "WARNING" if self.level == "warn" else self.level.upper()


class RateLimitConfig(_Section):
    enabled: bool = False
    requests_per_second: float = Field(default=10, gt=0)
    burst: int = Field(default=20, gt=0)


class MetricsConfig(_Section):
    enabled: bool = True
    path: str = "/metrics"


class SamplerConfig(_Section):
    type: Literal["always", "never", "probability"] = "probability"
    rate: float = Field(default=0.1, ge=0, le=1)


class ExporterConfig(_Section):
    type: Literal["otlp", "stdout"] = "otlp"
    endpoint: str = "localhost:4317"
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    insecure: bool = True
    headers: dict[str, str] = Field(default_factory=dict)


class TracingConfig(_Section):
    enabled: bool = False
    service_name: str = "llm-gateway"
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)


class ObservabilityConfig(_Section):
    enabled: bool = False
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)


class AuthConfig(_Section):
    enabled: bool = False
    issuer: str = ""
    audience: str | list[str] = ""


class ProviderEntry(_Section):
    type: str
    api_key: str = ""
    endpoint: str = ""
    api_version: str = ""
    project: str = ""
    location: str = ""
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 120.0

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROVIDER_TYPES:
            raise ValueError(f"unknown provider type {value!r} (expected one of: {', '.join(PROVIDER_TYPES)})")
        return value

    @field_validator("connect_timeout", "read_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ModelEntry(_Section):
    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    provider_model_id: str = ""

    @property
    def upstream_model(self) -> str:
        return self.provider_model_id or self.name


class ConversationsConfig(_Section):
    store: Literal["sql"] = "sql"
    ttl: Duration = 3600.0
    # Accepted for compatibility with the seed's file; the gateway always stores in DATABASE_URL.
    driver: str = ""
    dsn: str = ""

    @field_validator("ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class GatewayConfig(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    providers: dict[str, ProviderEntry] = Field(default_factory=dict)
    models: list[ModelEntry] = Field(default_factory=list)
    conversations: ConversationsConfig = Field(default_factory=ConversationsConfig)

    @model_validator(mode="after")
    def _models_point_at_providers(self) -> GatewayConfig:
        seen: set[str] = set()
        for index, model in enumerate(self.models):
            if model.provider not in self.providers:
                raise ConfigError(
                    f"models[{index}].provider: model {model.name!r} points at unknown provider "
                    f"{model.provider!r} (configured: {', '.join(sorted(self.providers)) or 'none'})"
                )
            if model.name in seen:
                raise ConfigError(f"models[{index}].name: model {model.name!r} is listed twice")
            seen.add(model.name)
        return self

    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)


def expand_env(value: Any, environ: dict[str, str] | os._Environ[str] = os.environ) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of the parsed YAML tree.

    Expanding after parsing (not in the raw text) means a secret containing `:` or `#`
    cannot change the document's structure.
    """
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [expand_env(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, environ) for k, v in value.items()}
    return value


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any) -> GatewayConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must be a YAML mapping of sections (server, providers, models, ...)")
    try:
        return GatewayConfig.model_validate(expand_env(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        # Pydantic appends the union/validator name to loc for some errors; keep the key path only.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{_location(loc)}: {message}") from None


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found (set GATEWAY_CONFIG, or copy config.example.yaml to config.yaml)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
