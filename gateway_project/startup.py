"""What gunicorn's master checks and says before it serves.

Imported by gateway_project/gunicorn.conf.py in the master, which never loads Django: nothing here
imports Django.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from gateway_project.config import GatewayConfig


class StartupError(Exception):
    """One line that stops start-up: printed as `config error: <line>`, exit status 2."""


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
