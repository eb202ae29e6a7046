"""The admin for API keys: the full key is shown once, in a message after the add form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from identity_app.keys import assign_new_key
from identity_app.models import ApiKey


class ModelListField(forms.Field):
    """allowed_models as a comma-separated line rather than raw JSON."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(value)
        return value or ""

    def to_python(self, value: Any) -> list[str]:
        return [m.strip() for m in (value or "").split(",") if m.strip()]


class ApiKeyForm(forms.ModelForm):
    allowed_models = ModelListField(required=False, help_text="Comma-separated model names; empty means every model.")

    class Meta:
        model = ApiKey
        fields = ("name", "owner", "allowed_models", "rpm", "tpm", "revoked_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "owner", "created_at", "last_used_at", "revoked_at")
    list_filter = ("owner",)
    search_fields = ("name", "prefix", "owner")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = ("revoke",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        key = None if change else assign_new_key(obj)
        super().save_model(request, obj, form, change)
        if key is not None:
            messages.warning(request,
                             f"New API key for {obj.owner!r}: {key} — copy it now, it will not be shown again.")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
