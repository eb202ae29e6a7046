"""What gunicorn's master checks and says before it serves, and the secret-key rule settings share.

Imported by gateway_project/gunicorn.conf.py in the master, which never loads Django, and by
gateway_project/settings.py, so the two cannot disagree about DEBUG or SECRET_KEY. Nothing here
imports Django.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway_project.config import GatewayConfig

# Public (it is in this file), so it may only ever sign anything with DEBUG on.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - the refused default, see secret_key_error
# django-environ's spelling of true, so DEBUG means the same here and in settings.
_TRUE = frozenset({"true", "on", "ok", "y", "yes", "1"})


class StartupError(Exception):
    """One line that stops start-up: printed as `config error: <line>`, exit status 2."""


def debug_enabled(environ: Mapping[str, str]) -> bool:
    return environ.get("DEBUG", "").strip().lower() in _TRUE


def secret_key(environ: Mapping[str, str]) -> str:
    """SECRET_KEY, else the contents of the file SECRET_KEY_FILE names (Docker and Kubernetes
    secrets are files), else the public development key, which secret_key_error refuses with DEBUG off."""
    if value := environ.get("SECRET_KEY", ""):
        return value
    if path := environ.get("SECRET_KEY_FILE", ""):
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise StartupError(f"SECRET_KEY_FILE: cannot read {path!r} ({exc.strerror})") from None
        if not value:
            raise StartupError(f"SECRET_KEY_FILE: {path!r} is empty")
        return value
    return DEV_SECRET_KEY


def check_secret_key(environ: Mapping[str, str]) -> str:
    """The key to use; StartupError when it is the public development key and DEBUG is off.

    With the public key anyone can forge admin sessions and, when GATEWAY_COMPACTION_KEYS is unset,
    open and forge the gateway's sealed compaction items, so it is good for DEBUG only.
    """
    key = secret_key(environ)
    if key == DEV_SECRET_KEY and not debug_enabled(environ):
        raise StartupError(
            "SECRET_KEY is not set and DEBUG is off; the built-in key is public. Set SECRET_KEY (or SECRET_KEY_FILE) "
            "to a long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`, "
            "the same on every instance")
    return key


def is_local(address: Any) -> bool:
    """True for an address only this host can reach: a loopback IP, localhost, a Unix socket."""
    if not isinstance(address, tuple):
        return True  # a Unix socket path or an inherited descriptor (fd://): whoever made it chose its reach
    host = str(address[0]).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '' (every interface) or a host name: reachable from elsewhere


def _describe(address: Any) -> str:
    if not isinstance(address, tuple):
        return f"fd://{address}" if isinstance(address, int) else f"unix:{address}"
    host, port = str(address[0]) or "0.0.0.0", address[1]  # noqa: S104 - naming it, not binding it
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{where} (every interface)" if host in ("0.0.0.0", "::") else where  # noqa: S104 - as above


def check_exposure(config: GatewayConfig, addresses: Iterable[Any]) -> None:
    """Refuse to listen beyond this host with auth off, unless server.expose_without_auth says so.

    With auth off every caller is the same anonymous owner: anyone who reaches the port spends the
    provider keys and reads every stored response. Like Redis's protected mode, the gateway will not
    start that way by accident; an operator whose proxy or mesh authenticates says so explicitly.
    """
    if config.auth.enabled or config.server.expose_without_auth:
        return
    exposed = [_describe(address) for address in addresses if not is_local(address)]
    if exposed:
        raise StartupError(
            f"refusing to listen on {', '.join(exposed)} with auth off, where anyone who can reach "
            "it spends the provider keys and reads every stored response. Turn auth on (auth.enabled: true), "
            "listen on 127.0.0.1, or set server.expose_without_auth: true if something in front authenticates")


def summary(config: GatewayConfig, config_path: str, listeners: Iterable[object], workers: int,
            environ: Mapping[str, str]) -> str:
    """The start-up line: where, with which file, and what is switched on."""
    auth = "auth off"
    if config.auth.enabled:
        auth = f"auth on (API keys{', OIDC ' + config.auth.issuer if config.auth.issuer else ''})"
    elif config.server.expose_without_auth:
        auth = "auth off (server.expose_without_auth)"
    limits = "rate limits off"
    if config.rate_limit.enabled:
        tpm = f", {config.rate_limit.tokens_per_minute} tpm" if config.rate_limit.tokens_per_minute else ""
        where = "Redis" if environ.get("REDIS_URL") else "per worker: REDIS_URL unset"
        limits = f"rate limits on ({config.rate_limit.rpm} rpm{tpm}, {where})"
    obs = config.observability
    metrics = f"metrics on {obs.metrics.path}" if obs.enabled and obs.metrics.enabled else "metrics off"
    tracing = "tracing off"
    if obs.enabled and obs.tracing.enabled:
        exporter = obs.tracing.exporter
        sink = "stdout" if exporter.type == "stdout" else f"OTLP {exporter.protocol} {exporter.endpoint}"
        tracing = f"tracing on ({sink})"
    websocket = "WebSocket mode " + ("on" if config.server.websocket.enabled else "off")
    line = (f"gateway: listening on {', '.join(str(listener) for listener in listeners)} "
            f"({workers} worker{'s' if workers != 1 else ''}), config {config_path}; "
            f"{auth}, {limits}, {metrics}, {tracing}, {websocket}")
    keyless = config.keyless_providers()
    if keyless:
        line += ("; providers without an api_key, whose models answer 503: "
                 + ", ".join(f"{key} (set {where})" for key, where in keyless))
    return line
