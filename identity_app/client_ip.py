"""The client's address: X-Forwarded-For is believed only when the peer is a trusted proxy.

The header is read right to left, skipping trusted proxies: the first untrusted hop is the
client. The leftmost entry is whatever the client wrote, so it is never taken on trust.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(value.strip(), strict=False) for value in values]


def in_networks(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: HttpRequest, trusted: list[Network]) -> str:
    peer = request.META.get("REMOTE_ADDR", "") or "unknown"
    if not trusted or not in_networks(peer, trusted):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop if _valid(hop) else peer
    # Every hop is a proxy of ours: the leftmost is as close to the client as we can get.
    return hops[0] if hops else peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
