"""API authentication: gateway API keys and OIDC bearer tokens; a guard for the metrics path.

Default deny: every path needs a credential except the probes, the metrics path (which has its
own guard) and the Django admin (which has its own login). `auth.enabled: false` is the
anonymous dev mode: nothing is checked and everything belongs to the owner ''.
Failures are one fixed 401 body: the reason goes to the log, never to the client.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.api_errors import ApiError
from gateway_project.request_notes import notes_of
from identity_app.client_ip import client_ip, in_networks, parse_networks
from identity_app.identity import Identity, set_identity
from identity_app.keys import find_active_key, looks_like_api_key
from identity_app.models import OIDC_OWNER_PREFIX
from identity_app.oidc import InvalidToken, IssuerUnavailable, OidcVerifier, looks_like_jwt

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/ready"})
PUBLIC_PREFIXES = ("/admin/", "/static/")


def unauthorized() -> HttpResponse:
    return ApiError(401, "Incorrect API key provided. Pass a valid gateway API key or OIDC token as "
                         "'Authorization: Bearer <token>' (or a key as 'x-api-key: <key>').",
                    code="invalid_api_key").response()


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def api_credential(request: HttpRequest) -> str | None:
    """The caller's credential: a bearer token, or else `x-api-key` (how Anthropic's SDK and tools
    send their key; accepted on every API path, like a bearer token)."""
    return bearer_token(request) or request.headers.get("x-api-key", "").strip() or None


class AuthMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | StreamingHttpResponse]) -> None:
        self.get_response = get_response
        config = settings.GATEWAY.auth
        self.enabled = config.enabled
        self.metrics_path = settings.GATEWAY.observability.metrics.path
        self.metrics_token = config.metrics.bearer_token
        self.metrics_networks = parse_networks(config.metrics.allowed_networks)
        self.trusted_proxies = parse_networks(settings.GATEWAY.rate_limit.trusted_proxies)
        if not self.enabled and not self.metrics_token and not self.metrics_networks:
            raise MiddlewareNotUsed
        self.oidc = OidcVerifier(config) if config.enabled and config.issuer else None

    def __call__(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        path = request.path
        if path == self.metrics_path:
            return self._guard_metrics(request) or self.get_response(request)
        if not self.enabled or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return self.get_response(request)
        try:
            identity = self.authenticate(request)
        except IssuerUnavailable as exc:
            logger.warning("auth: OIDC issuer unavailable: %s", exc)
            return ApiError(503, "The identity provider is unavailable; try again shortly.", type="server_error",
                            code="auth_unavailable", headers={"Retry-After": "5"}).response()
        if identity is None:
            # The rate limiter counts failed attempts per client address (rotating keys gains nothing).
            notes_of(request).auth_failed = True
            return unauthorized()
        # The key's model allow-list is applied where the model is routed (providers.registry), to
        # what is actually served, aliases and fallbacks included.
        set_identity(request, identity)
        return self.get_response(request)

    def authenticate(self, request: HttpRequest) -> Identity | None:
        token = api_credential(request)
        if token is None:
            logger.info("auth: no bearer token or x-api-key on %s", request.path)
            return None
        if looks_like_api_key(token):
            record = find_active_key(token)
            if record is None:
                logger.info("auth: unknown or revoked API key")
                return None
            return Identity(kind="api_key", owner=record.owner, subject=f"key:{record.pk}",
                            allowed_models=frozenset(record.allowed_models or ()), rpm=record.rpm, tpm=record.tpm)
        if self.oidc is not None and looks_like_jwt(token):
            try:
                claims = self.oidc.verify(token)
                owner = self.oidc.owner_of(claims)
            except InvalidToken as exc:
                logger.info("auth: OIDC token rejected: %s", exc)
                return None
            subject = claims.get("sub") if isinstance(claims.get("sub"), str) else owner
            return Identity(kind="oidc", owner=OIDC_OWNER_PREFIX + owner, subject=f"oidc:{subject}")
        logger.info("auth: bearer token is neither a gateway key nor an accepted JWT")
        return None

    def _guard_metrics(self, request: HttpRequest) -> HttpResponse | None:
        if self.metrics_networks and not in_networks(client_ip(request, self.trusted_proxies), self.metrics_networks):
            return ApiError(403, "This address may not read metrics.", type="invalid_request_error",
                            code="forbidden").response()
        if self.metrics_token:
            token = bearer_token(request) or ""
            if not hmac.compare_digest(token.encode(), self.metrics_token.encode()):
                return unauthorized()
        return None
