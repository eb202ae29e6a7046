"""Browse stored conversations in the Django admin. Read-only: the API is the only writer.

Items are rendered as a transcript from one query per page; changelists never COUNT(*) the
large tables (fixed-count paginator) and never query per row.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.functional import cached_property

from conversations_app.models import Conversation, Item, StoredResponse


class LargeTablePaginator(Paginator):
    """Skips COUNT(*) on tables that grow without bound; the admin shows 'more' instead of a total."""

    @cached_property
    def count(self) -> int:
        return 10_000_000


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner", "model", "turn_count", "input_tokens", "output_tokens", "updated_at")
    list_filter = ("model",)
    search_fields = ("=id", "=owner")
    date_hierarchy = "updated_at"
    paginator = LargeTablePaginator
    show_full_result_count = False


@admin.register(StoredResponse)
class StoredResponseAdmin(ReadOnlyAdmin):
    list_display = ("id", "conversation_id", "depth", "owner", "model", "provider", "status",
                    "input_tokens", "output_tokens", "created_at", "deleted_at")
    list_filter = ("status", "model", "provider")
    search_fields = ("=id", "=conversation__id", "=owner")
    readonly_fields = ("transcript",)
    raw_id_fields = ("conversation", "previous_response")
    paginator = LargeTablePaginator
    show_full_result_count = False

    @admin.display(description="Transcript of this turn")
    def transcript(self, obj: StoredResponse) -> str:
        items = Item.objects.filter(response=obj).order_by("kind", "position")
        return render_to_string("admin/conversations_app/transcript.html",
                                {"items": items, "instructions": obj.instructions})
