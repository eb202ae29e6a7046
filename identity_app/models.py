"""Gateway API keys. The database holds a SHA-256 of each key, never the key itself."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django_prometheus.models import ExportModelOperationsMixin

OIDC_OWNER_PREFIX = "oidc:"


def validate_owner(value: str) -> None:
    # OIDC identities own things as "oidc:<claim>"; a key must not be able to impersonate one.
    if value.startswith(OIDC_OWNER_PREFIX):
        raise ValidationError(f"an API key owner may not start with {OIDC_OWNER_PREFIX!r}")


# ExportModelOperationsMixin(name) builds its class at run time, which mypy cannot follow: each
# model that uses it ignores mypy's "Unsupported dynamic base class" (misc) on its class line.
class ApiKey(ExportModelOperationsMixin("api_key"), models.Model):  # type: ignore[misc]
    name = models.CharField(max_length=200)
    # The first characters of the key, shown in lists so an operator can tell keys apart.
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    owner = models.CharField(max_length=200, validators=[validate_owner],
                             help_text="Tenant label: responses are visible only to keys with the same owner.")
    allowed_models = models.JSONField(default=list, blank=True, help_text="Model names; empty means every model.")
    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute (empty: global limit).")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute (empty: global limit).")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
