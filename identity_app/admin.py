"""The admin for API keys (staff only).

- Create: the full key is rendered once, in the answer to the add form's POST, and exists nowhere
  else: not in the database (only its SHA-256), not in a message, the session or a cookie (a
  redirect would need one of those to carry it), not in a log line. The page is `no-store`.
- Revoke: an explicit action with a confirmation page, from the change page or for the selected
  keys of the list, through identity_app.keys.revoke as `manage.py revoke_api_key` does, and
  recorded in the admin's history (LogEntry). Keys are never deleted: a revoked key keeps its
  history and its usage.
- Edit: name, owner, limits and allowed models (names the config does not serve are a warning).
- The change page shows the key's usage over the last 30 days from the rollup (UsageDay).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Cast, Concat
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from conversations_app.models import UsageDay
from identity_app import keys
from identity_app.key_usage import USAGE_DAYS, usage_of_key
from identity_app.models import ApiKey

if TYPE_CHECKING:
    from django.utils.safestring import SafeString

# Where save_model leaves a new key for response_add, on the object of this one request only.
_NEW_KEY_ATTR = "_issued_key_shown_once"


class ModelListField(forms.Field):
    """allowed_models as a comma-separated line rather than raw JSON."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(value)
        return value or ""

    def to_python(self, value: Any) -> list[str]:
        return [m.strip() for m in (value or "").split(",") if m.strip()]


class ApiKeyForm(forms.ModelForm):
    allowed_models = ModelListField(required=False, help_text="Comma-separated model names or aliases; empty means "
                                                              "every model.")

    class Meta:
        model = ApiKey
        fields = ("name", "owner", "allowed_models", "rpm", "tpm")


class RevokedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


def _requests_since(days: int) -> Subquery:
    """Requests of the key in the list row over the last `days` days, as one correlated subquery
    on the rollup's (subject, day) index, so the list stays one query however many keys it shows."""
    since = timezone.localdate() - timedelta(days=days - 1)
    subject = Concat(Value("key:"), Cast(OuterRef("pk"), output_field=CharField()))
    per_key = (UsageDay.objects.filter(subject=subject, day__gte=since).order_by()
               .values("subject").annotate(total=Sum("requests")).values("total"))
    return Subquery(per_key)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "owner", "models", "limits", "requests_30d", "created", "last_used", "revoked")
    # Owners are found with the search box: a filter listing every owner grows without bound.
    list_filter = (RevokedFilter,)
    search_fields = ("name", "prefix", "owner")
    ordering = ("-created_at",)
    actions = ("revoke_selected",)
    change_form_template = "admin/identity_app/apikey/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).annotate(requests_30d=_requests_since(USAGE_DAYS))

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[Any]:
        editable: list[Any] = ["name", "owner", "allowed_models", "rpm", "tpm"]
        if obj is None:
            return editable
        return ["prefix", *editable, "created_at", "last_used_at", "revoked_at", "usage"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return () if obj is None else ("prefix", "created_at", "last_used_at", "revoked_at", "usage")

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Revocation is the way out: deleting would orphan the key's usage and history.
        return False

    # --- columns -------------------------------------------------------------------------------

    @admin.display(description="models")
    def models(self, obj: ApiKey) -> str:
        return ", ".join(obj.allowed_models) or "all"

    @admin.display(description="rpm / tpm")
    def limits(self, obj: ApiKey) -> str:
        return f"{_limit(obj.rpm)} / {_limit(obj.tpm)}"

    @admin.display(description=f"{USAGE_DAYS}-day requests", ordering="requests_30d")
    def requests_30d(self, obj: ApiKey) -> int:
        return getattr(obj, "requests_30d", None) or 0

    # Compact times keep the list within a laptop's width.
    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ApiKey) -> str:
        return _short(obj.created_at)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> str:
        return _short(obj.last_used_at)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, obj: ApiKey) -> str:
        return _short(obj.revoked_at)

    @admin.display(description=f"usage, last {USAGE_DAYS} days")
    def usage(self, obj: ApiKey) -> SafeString:
        usage = usage_of_key(obj.pk)
        if not usage.rows:
            return format_html("No requests since {}.", usage.since)
        rows = [*usage.rows, usage.total]
        return format_html(
            '<table><thead><tr><th>model</th><th>requests</th><th>errors</th><th>input tokens</th>'
            '<th>output tokens</th><th>total tokens</th><th>cost (USD)</th></tr></thead><tbody>{}</tbody></table>'
            '<p class="help">Since {}, from the usage rollup (a gunicorn worker writes its counts every few '
            'seconds). The cost is 0 for models without pricing in the config.</p>',
            format_html_join("", "<tr>" + "<td>{}</td>" * 7 + "</tr>",
                             ((r.model, r.requests, r.errors, r.input_tokens, r.output_tokens, r.total_tokens,
                               f"{r.cost_usd:.4f}") for r in rows)),
            usage.since)

    # --- create and edit ------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            setattr(obj, _NEW_KEY_ATTR, keys.assign_new_key(obj))
        super().save_model(request, obj, form, change)
        for warning in keys.config_warnings(obj.allowed_models, has_limits=bool(obj.rpm or obj.tpm)):
            messages.warning(request, warning)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        key = getattr(obj, _NEW_KEY_ATTR, None)
        if key is None:  # pragma: no cover - save_model always sets it on add
            return super().response_add(request, obj, post_url_continue)
        # Rendered in the answer to this POST rather than after a redirect: a redirect would have to
        # carry the key in the session, a cookie or a message.
        context = {**self.admin_site.each_context(request), "opts": self.opts, "original": obj, "key": key,
                   "title": "API key created", "change_url": self._change_url(obj)}
        response = TemplateResponse(request, "admin/identity_app/apikey/key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    # --- revoke ----------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        revoke = path("<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view),
                      name="identity_app_apikey_revoke")
        return [revoke, *super().get_urls()]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such API key.")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST":
            self._revoke(request, [obj])
            return HttpResponseRedirect(self._change_url(obj))
        return self._confirm(request, [obj], single=True)

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        chosen = list(queryset)
        if request.POST.get("post") == "yes":
            self._revoke(request, chosen)
            return None
        return self._confirm(request, chosen, single=False)

    def _confirm(self, request: HttpRequest, chosen: list[ApiKey], *, single: bool) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": "Revoke API keys?",
                   "keys": chosen, "active": [k for k in chosen if not k.revoked], "single": single,
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME}
        return TemplateResponse(request, "admin/identity_app/apikey/revoke_confirmation.html", context)

    def _revoke(self, request: HttpRequest, chosen: list[ApiKey]) -> None:
        done = keys.revoke_keys(chosen)
        if done:
            # Admin views run for a logged-in staff user only, so the user has a primary key.
            LogEntry.objects.log_actions(user_id=cast(int, request.user.pk), queryset=done, action_flag=CHANGE,
                                         change_message="Revoked.")
        already = len(chosen) - len(done)
        note = f" ({already} already revoked)" if already else ""
        self.message_user(request, f"Revoked {len(done)} key(s){note}; every worker refuses them from now on.",
                          messages.SUCCESS)

    def _change_url(self, obj: ApiKey) -> str:
        return reverse("admin:identity_app_apikey_change", args=[obj.pk], current_app=self.admin_site.name)


def _limit(value: int | None) -> str:
    return "global" if value is None else str(value)


def _short(value: datetime | None) -> str:
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M")

