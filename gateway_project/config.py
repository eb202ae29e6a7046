"""The gateway's own configuration: the seed's `config.yaml` schema, validated at start-up.

Django settings come from the environment (see settings.py); everything about providers, models
and observability comes from this YAML file, whose path is `GATEWAY_CONFIG`. A bad file stops
start-up with one line naming the offending key (`ConfigError`), never a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

PROVIDER_TYPES = ("openai", "azureopenai", "anthropic", "google", "demo")
# Types that cannot work without a key. `openai` needs one only on api.openai.com itself: an
# OpenAI-compatible server of your own (vLLM, Ollama, ...) often has none.
_KEY_REQUIRED = ("azureopenai", "anthropic", "google")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(Exception):
    """A configuration problem, phrased as one line an operator can act on."""


def describe_duration(seconds: float) -> str:
    """`2592000` -> "30 days", `5400` -> "1 hour 30 minutes", `0.5` -> "500 ms": what an operator typed,
    in words, for command output (two units at most)."""
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    parts: list[str] = []
    rest = round(seconds)
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])


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


def check_networks(values: list[str]) -> list[str]:
    """CIDRs or single addresses, checked at start-up rather than on the first request."""
    for value in values:
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (expected e.g. 10.0.0.0/8 or 192.0.2.1)") from None
    return values


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them so they are noticed.
    model_config = ConfigDict(extra="forbid")


class WebSocketConfig(_Section):
    """The WebSocket mode on /v1/responses (docs/api.md#websocket-mode)."""

    enabled: bool = True
    # Largest client message; a larger one closes the connection with 1009. Default: the body limit.
    max_message_size: int | None = Field(default=None, gt=0)
    # A connection with no message and no running response for this long is closed (1001).
    idle_timeout: Duration = Field(default=300.0, gt=0)
    # Ping a silent client after ping_interval; no pong within ping_timeout closes it (1011).
    ping_interval: Duration = Field(default=20.0, gt=0)
    ping_timeout: Duration = Field(default=20.0, gt=0)
    # A client that reads nothing for this long while events wait for it is disconnected.
    write_timeout: Duration = Field(default=30.0, gt=0)
    # OpenAI's limit: after this a connection takes no new response and closes once idle.
    max_connection_age: Duration = Field(default=3600.0, gt=0)

    @field_validator("idle_timeout", "ping_interval", "ping_timeout", "write_timeout", "max_connection_age",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ServerConfig(_Section):
    # Loopback by default: with auth off the gateway serves anyone who reaches it, so listening
    # beyond this host needs auth on or expose_without_auth (gateway_project/startup.py).
    address: str = "127.0.0.1:8080"
    # Listen beyond loopback with auth off, because something in front (a proxy, a mesh) authenticates.
    expose_without_auth: bool = False
    max_request_body_size: int = Field(default=10 * 1024 * 1024, gt=0)
    # No turn runs longer, retries and fallbacks included (each attempt is also bounded by its
    # provider's total_timeout). Also what a graceful shutdown waits for before cutting streams.
    turn_timeout: Duration = Field(default=600.0, gt=0)
    # A stream that has sent nothing for this long gets an SSE comment, so proxies and load
    # balancers with idle timeouts (often 60 s) do not cut a model that is still thinking. 0: off.
    sse_keepalive: Duration = 15.0
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)

    @field_validator("turn_timeout", "sse_keepalive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @property
    def bind(self) -> str:
        """gunicorn's bind form: ':8080' means every interface."""
        host, _, port = self.address.rpartition(":")
        return f"{host or '0.0.0.0'}:{port}"  # noqa: S104 - the operator asked for every interface


class LoggingConfig(_Section):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"

    @property
    def python_level(self) -> str:
        return "WARNING" if self.level == "warn" else self.level.upper()


class RateLimitConfig(_Section):
    enabled: bool = False
    # The seed's keys, kept for compatibility: without requests_per_minute the limit is
    # requests_per_second x 60; `burst` is accepted but unused (a bucket holds one minute).
    requests_per_second: float = Field(default=10, gt=0)
    burst: int = Field(default=20, gt=0)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)  # unset = no token limit
    # Reserved for a request that does not say max_output_tokens; reconciled when it ends.
    default_max_output_tokens: int = Field(default=1024, ge=0)
    # X-Forwarded-For is believed only from these peers (CIDRs or addresses).
    trusted_proxies: list[str] = Field(default_factory=list)
    # Redis down: admit (true) or refuse with 503 (false).
    fail_open: bool = True
    redis_key_prefix: str = "gw:rl:"
    redis_timeout: Duration = 0.25

    @field_validator("redis_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)

    @property
    def rpm(self) -> int:
        return self.requests_per_minute or max(1, round(self.requests_per_second * 60))


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


class MetricsGuardConfig(_Section):
    # Both empty: the metrics path is open (scrapers on a private network).
    bearer_token: str = ""
    allowed_networks: list[str] = Field(default_factory=list)

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)


class AuthConfig(_Section):
    enabled: bool = False
    # OIDC: empty issuer = gateway API keys only.
    issuer: str = ""
    audience: str | list[str] = ""
    jwks_cache_ttl: Duration = 3600.0
    # How long a worker may remember an active API key (identity_app.key_cache: any change to a key
    # makes every worker forget at once, so this only bounds the unexpected); 0 reads it every request.
    key_cache_ttl: Duration = 60.0
    leeway: Duration = 60.0  # clock skew tolerated on exp/nbf/iat
    # An unknown kid refetches the JWKS, but not more often than this (random kids cannot flood the IdP).
    jwks_refresh_cooldown: Duration = 30.0
    owner_claim: str = "sub"  # the claim that names the tenant; the owner is "oidc:<value>"
    http_timeout: Duration = 5.0
    metrics: MetricsGuardConfig = Field(default_factory=MetricsGuardConfig)

    @field_validator("jwks_cache_ttl", "key_cache_ttl", "leeway", "http_timeout", "jwks_refresh_cooldown",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class RetryConfig(_Section):
    """Retries of one upstream call, only before the first event reached the client."""

    max_retries: int = Field(default=2, ge=0, le=10)
    backoff: Duration = 0.5
    max_backoff: Duration = 8.0
    # A Retry-After longer than this is not waited for: the client gets the 429 (or the fallback runs).
    max_retry_after: Duration = 20.0

    @field_validator("backoff", "max_backoff", "max_retry_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class CircuitBreakerConfig(_Section):
    enabled: bool = True
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: Duration = 30.0
    # Requests (not attempts: a request's retries are one outcome) in the window before it may open,
    # so a handful of failing requests from one client cannot switch a model off for everyone.
    min_requests: int = Field(default=10, ge=1)
    open_duration: Duration = 60.0
    half_open_probes: int = Field(default=3, ge=1)

    @field_validator("window", "open_duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ProviderEntry(_Section):
    type: str
    api_key: str = ""
    endpoint: str = ""
    api_version: str = ""
    project: str = ""
    location: str = ""
    # `openai` only: `chat` (Chat Completions) or `responses` (the upstream's own /v1/responses,
    # called with store:false; the gateway still stores and replays the chain).
    api: Literal["chat", "responses"] = "chat"
    connect_timeout: Duration = 5.0
    # The default for first_byte_timeout and idle_timeout when they are not set.
    read_timeout: Duration = 120.0
    first_byte_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    total_timeout: Duration = 600.0
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    # Hosted tools (web_search, file_search, mcp, ...) this provider type has no equivalent for:
    # left out of the request (`drop`, named in the X-Gateway-Dropped-Tools header) or a 400 (`error`).
    unsupported_tools: Literal["drop", "error"] = "drop"
    # The `${VAR}` api_key was read from, for messages that tell an operator what to set.
    _api_key_env: str = PrivateAttr(default="")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROVIDER_TYPES:
            raise ValueError(f"unknown provider type {value!r} (expected one of: {', '.join(PROVIDER_TYPES)})")
        return value

    @field_validator("connect_timeout", "read_timeout", "first_byte_timeout", "idle_timeout", "total_timeout",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _type_specific(self) -> ProviderEntry:
        if self.type == "azureopenai" and not self.endpoint:
            raise ValueError("an azureopenai provider needs `endpoint` (https://<resource>.openai.azure.com)")
        if self.api != "chat" and self.type != "openai":
            raise ValueError("`api: responses` is only available for providers of type openai")
        return self

    @property
    def effective_first_byte_timeout(self) -> float:
        return self.read_timeout if self.first_byte_timeout is None else self.first_byte_timeout

    @property
    def effective_idle_timeout(self) -> float:
        return self.read_timeout if self.idle_timeout is None else self.idle_timeout

    @property
    def missing_key(self) -> bool:
        """True when requests cannot work: this type needs an api_key and it is empty."""
        if self.api_key:
            return False
        return self.type in _KEY_REQUIRED or (self.type == "openai" and not self.endpoint)

    def missing_key_message(self, key: str) -> str:
        where = (f"set {self._api_key_env} in the gateway's environment" if self._api_key_env
                 else f"set providers.{key}.api_key in the config file (e.g. api_key: ${{{key.upper()}_API_KEY}})")
        return f"provider {key!r} has no api_key; {where} and restart the gateway"

    def missing_key_setting(self, key: str) -> str:
        """The variable (or, without one, the config key) that would give this entry its key."""
        return self._api_key_env or f"providers.{key}.api_key"


class ModelPricing(_Section):
    """USD per million tokens, as providers publish their prices."""

    input: float = Field(default=0, ge=0)
    output: float = Field(default=0, ge=0)


class ModelEntry(_Section):
    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    provider_model_id: str = ""
    # Other names clients may use for this model.
    aliases: list[str] = Field(default_factory=list)
    # Models (names or aliases) tried in order when this one fails before its answer starts.
    fallbacks: list[str] = Field(default_factory=list)
    # Optional, USD per million tokens: feeds provider_cost_usd_total and each stored response's cost.
    pricing: ModelPricing | None = None

    @property
    def upstream_model(self) -> str:
        return self.provider_model_id or self.name

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float | None:
        """What a turn cost at the configured prices; None when the model has no prices."""
        if self.pricing is None:
            return None
        return (input_tokens * self.pricing.input + output_tokens * self.pricing.output) / 1_000_000


class ConversationsConfig(_Section):
    store: Literal["sql"] = "sql"
    # How long stored conversations are kept after their last turn: `manage.py purge_conversations`
    # (without --older-than) deletes the older ones. Unset: kept until purged with --older-than.
    retention: Duration | None = Field(default=None, gt=0)
    # Only the window of the gateway_conversations_active gauge ("a turn within ttl"); deletes nothing.
    ttl: Duration = 3600.0
    # Chat Completions and Messages calls are stateless: each is counted for usage and cost, and its
    # transcript is kept (browsable in the admin) only when the request sends `store: true` or this
    # is on (a request's `store: false` still wins). Never needed to chain: those APIs do not chain.
    store_stateless_calls: bool = False
    # Accepted for compatibility with the seed's file; the gateway always stores in DATABASE_URL.
    driver: str = ""
    dsn: str = ""

    @field_validator("ttl", "retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class GatewayConfig(_Section):
    # Read as `settings.GATEWAY` on every request, many times. Django's settings (a LazyObject)
    # ask each value they hand out for `_mask_wrapped`; on a pydantic model a missing attribute
    # is an AttributeError raised and caught (2.2 us a read, 9-11 reads a request). The class
    # answers it: 0.3 us, as for any other setting.
    _mask_wrapped: ClassVar[bool] = True

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
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ConfigError(f"models[{index}]: model name or alias {name!r} is used twice")
                seen.add(name)
        for index, model in enumerate(self.models):
            for fallback in model.fallbacks:
                if fallback not in seen:
                    raise ConfigError(f"models[{index}].fallbacks: {fallback!r} is not a configured model")
                if self.model(fallback) is model:
                    raise ConfigError(f"models[{index}].fallbacks: model {model.name!r} cannot fall back to itself")
        return self

    def model(self, name: str) -> ModelEntry | None:
        """The model a client's `model` names, by name or alias."""
        return next((m for m in self.models if m.name == name or name in m.aliases), None)

    def missing_key_warnings(self) -> list[str]:
        """One line per provider entry that cannot serve requests for lack of a key."""
        return [entry.missing_key_message(key) for key, entry in self.providers.items() if entry.missing_key]

    def keyless_providers(self) -> list[tuple[str, str]]:
        """(entry, what to set) for each provider entry that cannot serve for lack of a key."""
        return [(key, entry.missing_key_setting(key)) for key, entry in self.providers.items() if entry.missing_key]


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
        config = GatewayConfig.model_validate(expand_env(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        # Pydantic appends the union/validator name to loc for some errors; keep the key path only.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{_location(loc)}: {message}") from None
    _remember_key_sources(config, data)
    return config


def _remember_key_sources(config: GatewayConfig, data: dict[str, Any]) -> None:
    providers = data.get("providers") or {}
    for key, entry in config.providers.items():
        raw = (providers.get(key) or {}).get("api_key")
        if isinstance(raw, str) and (match := _ENV_REF.search(raw)):
            entry._api_key_env = match.group(1)


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
