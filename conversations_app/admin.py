"""Browse stored conversations and usage in the Django admin (staff only).

History is read-only: the API is its only writer. The one change an operator can make is to delete
a response or an API conversation exactly as the API does (a response is hidden, an API
conversation hidden and then removed in batches), behind a confirmation page, recorded in the
admin's LogEntry and in the log. Changelists never COUNT(*) a large table (conversations_app.
counting) and never query per row; a conversation page is a chat read in three queries.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from conversations_app import removal
from conversations_app.admin_views import (
    Turn,
    admin_url,
    conversation_turns,
    rollup_filter,
    search_conversations,
    search_responses,
    short,
    usage_chart,
)
from conversations_app.api_store import api_conversations
from conversations_app.counting import EstimatedCountPaginator
from conversations_app.models import Conversation, Item, StoredResponse, UsageDay
from conversations_app.store import store

logger = logging.getLogger(__name__)

SEARCH_HELP = "Words of the messages (Postgres full-text search), or an id (resp_…, conv_…, msg_…)."


class ReadOnlyAdmin(admin.ModelAdmin):
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # "N results (M total)" would COUNT(*) the whole table
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice
    list_per_page = 50

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("conversations_app/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # No bulk actions, so no bulk delete that cascades through later turns and no
        # "select all N" over a table that is only estimated.
        return {}


def id_link(obj: Conversation | StoredResponse) -> str:
    return format_html('<a href="{}" title="{}" class="gw-id">{}</a>', admin_url(obj), obj.pk, short(obj.pk))


class TokensColumn:
    @admin.display(description="tokens")
    def tokens(self, obj: Conversation | StoredResponse) -> str:
        return format_html('<span title="input → output tokens">{} → {}</span>', f"{obj.input_tokens:,}",
                           f"{obj.output_tokens:,}")


def time_column(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    # The year and seconds are in the title: the column stays narrow.
    return format_html('<span title="{}" class="gw-time">{}</span>', moment.isoformat(), moment.strftime("%m-%d %H:%M"))


class DeleteAsApiMixin:
    """The admin's delete view, replaced: what the API's DELETE does, after a confirmation page,
    recorded in LogEntry and in the log. Subclasses say what the API does (`delete_as_api`)."""

    what_happens = ""

    def delete_as_api(self, obj: Any) -> bool:
        raise NotImplementedError

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
                    ) -> HttpResponse:
        model_admin: admin.ModelAdmin = self  # type: ignore[assignment]
        obj = model_admin.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not model_admin.has_delete_permission(request, obj):
            raise PermissionDenied
        opts = model_admin.model._meta
        if request.method == "POST":
            with transaction.atomic():
                done = self.delete_as_api(obj)
                if done:
                    LogEntry.objects.log_actions(
                        user_id=request.user.pk or 0, queryset=[obj], action_flag=DELETION,
                        change_message=f"Deleted as the API does: {self.what_happens}", single_object=True)
            if done:
                logger.info("admin: %s deleted %s %s as the API does (owner %r)", request.user.get_username(),
                            opts.model_name, obj.pk, obj.owner)
                model_admin.message_user(request, f"{obj.pk} deleted as the API does: {self.what_happens}",
                                         messages.SUCCESS)
            else:
                model_admin.message_user(request, f"{obj.pk} was already deleted.", messages.WARNING)
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        context = {**model_admin.admin_site.each_context(request), "opts": opts, "object": obj,
                   "title": "Delete (as the API does)", "what_happens": self.what_happens,
                   "app_label": opts.app_label, **(extra_context or {})}
        return TemplateResponse(request, "admin/conversations_app/delete_as_api.html", context)


@admin.register(Conversation)
class ConversationAdmin(DeleteAsApiMixin, TokensColumn, ReadOnlyAdmin):
    list_display = ("conversation", "kind", "owner", "model", "turn_count", "tokens", "updated", "deleted")
    list_display_links = None
    list_filter = ("kind", rollup_filter("owner", "owner"), rollup_filter("model", "model"),
                   ("updated_at", admin.DateFieldListFilter))
    search_fields = ("id",)  # shows the search box; the search itself is get_search_results
    search_help_text = SEARCH_HELP
    # Several fields a line, so that the chat starts near the top of the page.
    fields = (("id", "kind", "owner"), ("model", "turn_count", "input_tokens", "output_tokens"),
              ("created_at", "updated_at", "deleted_at"), "metadata", "chat")
    readonly_fields = ("chat",)
    what_happens = ("it is hidden at once (every API route answers 404) and its items and turns are then removed "
                    "in batches, as DELETE /v1/conversations/{id} does.")

    @admin.display(description="conversation", ordering="id")
    def conversation(self, obj: Conversation) -> str:
        return id_link(obj)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Conversation) -> str:
        return time_column(obj.updated_at)

    @admin.display(description="deleted", ordering="deleted_at")
    def deleted(self, obj: Conversation) -> str:
        return time_column(obj.deleted_at)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
                           ) -> tuple[QuerySet[Conversation], bool]:
        return search_conversations(queryset, search_term), False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        # The API deletes conversations of the Conversations API only; a chain's turns are deleted
        # one response at a time.
        if obj is not None and (obj.kind != Conversation.Kind.API or obj.deleted_at is not None):
            return False
        return super().has_delete_permission(request, obj)

    def delete_as_api(self, obj: Conversation) -> bool:
        if not api_conversations.delete_conversation(obj.pk, obj.owner):
            return False
        transaction.on_commit(partial(removal.start, obj.pk))
        return True

    @admin.display(description="Chat")
    def chat(self, obj: Conversation) -> str:
        turns, left_out = conversation_turns(obj)
        return render_to_string("admin/conversations_app/chat.html",
                                {"turns": turns, "left_out": left_out, "conversation": obj})


@admin.register(StoredResponse)
class StoredResponseAdmin(DeleteAsApiMixin, TokensColumn, ReadOnlyAdmin):
    # Narrow columns, so that status, tokens and cost stay on screen at 1400 px beside the filters.
    list_display = ("response", "conversation_link", "caller", "model", "status_shown", "tokens", "cost", "created")
    list_display_links = None
    list_filter = ("status", rollup_filter("owner", "owner"), rollup_filter("subject", "key / subject"),
                   rollup_filter("model", "model"), rollup_filter("provider", "provider"),
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("id",)
    search_help_text = SEARCH_HELP
    fields = (("id", "conversation_link", "previous_link", "depth"), ("owner", "subject", "model", "provider"),
              ("status", "interrupted", "created_at", "completed_at", "deleted_at"),
              ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd"), "transcript")
    readonly_fields = ("conversation_link", "previous_link", "transcript")
    what_happens = ("it is hidden from the API (GET answers 404, it can no longer be chained from) and its items "
                    "stay, so turns already built on it keep their context, as DELETE /v1/responses/{id} does.")

    def get_queryset(self, request: HttpRequest) -> QuerySet[StoredResponse]:
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "conversations_app_storedresponse_changelist":
            # A page of the list reads none of the JSON columns, which can be large.
            queryset = queryset.defer("settings", "error", "incomplete_details", "instructions")
        return queryset

    @admin.display(description="response", ordering="created_at")
    def response(self, obj: StoredResponse) -> str:
        return id_link(obj)

    @admin.display(description="caller")
    def caller(self, obj: StoredResponse) -> str:
        return " · ".join(part for part in (obj.owner, obj.subject) if part) or "-"

    @admin.display(description="cost $", ordering="cost_usd")
    def cost(self, obj: StoredResponse) -> str:
        return "-" if obj.cost_usd is None else f"{obj.cost_usd:.6f}".rstrip("0").rstrip(".")

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: StoredResponse) -> str:
        if obj.deleted_at is not None:
            return format_html('{} <span class="gw-deleted" title="deleted {}">deleted</span>', obj.status,
                               obj.deleted_at.isoformat(timespec="seconds"))
        return obj.status

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: StoredResponse) -> str:
        return time_column(obj.created_at)

    @admin.display(description="conversation")
    def conversation_link(self, obj: StoredResponse) -> str:
        url = reverse("admin:conversations_app_conversation_change", args=[quote(obj.conversation_id)])
        return format_html('<a href="{}" title="{}" class="gw-id">{}</a>', url, obj.conversation_id,
                           short(obj.conversation_id))

    @admin.display(description="previous response")
    def previous_link(self, obj: StoredResponse) -> str:
        if not obj.previous_response_id:
            return "-"
        url = reverse("admin:conversations_app_storedresponse_change", args=[quote(obj.previous_response_id)])
        return format_html('<a href="{}">{}</a>', url, obj.previous_response_id)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[StoredResponse], search_term: str
                           ) -> tuple[QuerySet[StoredResponse], bool]:
        return search_responses(queryset, search_term), False

    def has_delete_permission(self, request: HttpRequest, obj: StoredResponse | None = None) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_delete_permission(request, obj)

    def delete_as_api(self, obj: StoredResponse) -> bool:
        return store.delete_response(obj.pk, obj.owner)

    @admin.display(description="Transcript of this turn")
    def transcript(self, obj: StoredResponse) -> str:
        items = list(Item.objects.filter(response=obj).order_by("kind", "position"))
        followups = list(StoredResponse.objects.filter(previous_response=obj).values_list("id", flat=True)[:50])
        turn = Turn(obj, items=items, followups=followups)
        return render_to_string("admin/conversations_app/chat.html",
                                {"turns": [turn], "left_out": 0, "single": True})


@admin.register(UsageDay)
class UsageDayAdmin(ReadOnlyAdmin):
    """Usage per day, model, provider, owner and key, from the rollup only (never the responses)."""

    list_display = ("day", "model", "provider", "owner", "subject", "requests", "errors", "input_tokens",
                    "cached_tokens", "output_tokens", "cost_usd")
    list_display_links = None
    list_filter = (("day", admin.DateFieldListFilter), rollup_filter("model", "model"),
                   rollup_filter("provider", "provider"), rollup_filter("owner", "owner"),
                   rollup_filter("subject", "key / subject"))
    ordering = ("-day", "model", "owner", "subject")
    list_per_page = 100

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if isinstance(response, TemplateResponse) and context and "cl" in context:
            svg, totals = usage_chart(context["cl"].queryset)
            context.update(usage_chart=svg, usage_totals=totals)
        return response
