"""OIDC bearer tokens: discovery and JWKS fetched lazily, cached, refreshed on an unknown `kid`.

PyJWT does the cryptography and claim checks; this module pins what the origin gateway got
right (RS/ES only, `kid` required, exact issuer, audience string or list) and fixes what it got
wrong (the reason for a rejection is logged, never sent to the client).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from gateway_project.config import AuthConfig

if TYPE_CHECKING:
    from jwt import PyJWKClient

# PyJWT is imported where a token is verified, not with this module, which every worker loads:
# for nothing when no issuer is configured (with pygal, admin_views.usage_chart, 4 MB of a worker's
# RSS; the cryptography it uses stays, gateway_project.sealing needs it).

logger = logging.getLogger(__name__)

# Owners are stored in 200-character columns, with the "oidc:" prefix in front.
MAX_OWNER_LENGTH = 190

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


class InvalidToken(Exception):
    """The token is not acceptable. The message is for the log only."""


class IssuerUnavailable(Exception):
    """Discovery or JWKS could not be fetched: not the client's fault."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class OidcVerifier:
    def __init__(self, config: AuthConfig) -> None:
        self.issuer = config.issuer
        self.audience = config.audience or None
        self.leeway = config.leeway
        self.ttl = config.jwks_cache_ttl
        self.timeout = config.http_timeout
        self.owner_claim = config.owner_claim
        self.cooldown = config.jwks_refresh_cooldown
        self._lock = threading.Lock()
        self._jwks: PyJWKClient | None = None
        self._discovered_at = 0.0

    def _fetch_json(self, url: str) -> Any:
        # The URL is the configured issuer's (or its discovery document's), never a client's.
        headers = {"Accept": "application/json", "User-Agent": "llm-gateway"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.load(response)

    def _client(self) -> PyJWKClient:
        from jwt import PyJWKClient

        with self._lock:
            if self._jwks is None or time.monotonic() - self._discovered_at > self.ttl:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    discovery = self._fetch_json(url)
                except Exception as exc:  # noqa: BLE001 - any failure means we cannot verify now
                    raise IssuerUnavailable(f"discovery {url}: {exc}") from None
                if discovery.get("issuer") != self.issuer or not discovery.get("jwks_uri"):
                    raise IssuerUnavailable(f"discovery {url}: issuer mismatch or no jwks_uri")
                # PyJWKClient caches the key set for `lifespan` and refetches once on an unknown kid.
                self._jwks = PyJWKClient(discovery["jwks_uri"], cache_keys=True, lifespan=max(self.ttl, 1),
                                         timeout=self.timeout, cooldown_duration=self.cooldown)
                self._discovered_at = time.monotonic()
            return self._jwks

    def verify(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"algorithm {algorithm!r} not allowed")
        if not header.get("kid"):
            raise InvalidToken("no kid")
        client = self._client()
        try:
            signing_key = client.get_signing_key(header["kid"])
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable(f"jwks: {exc}") from None
        except jwt.PyJWKClientError as exc:
            raise InvalidToken(f"kid: {exc}") from None
        try:
            claims = jwt.decode(
                # The PyJWK itself, not its raw key: PyJWT then insists the token's alg is the key's.
                token, signing_key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return claims

    def owner_of(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.owner_claim)
        if not isinstance(value, str) or not value:
            raise InvalidToken(f"no {self.owner_claim!r} claim")
        if len(value) > MAX_OWNER_LENGTH:
            raise InvalidToken(f"{self.owner_claim!r} claim is longer than {MAX_OWNER_LENGTH} characters")
        if "\x00" in value or not value.isprintable():
            # The owner is stored with every row it creates; Postgres text cannot hold NUL.
            raise InvalidToken(f"{self.owner_claim!r} claim has control characters")
        return value
