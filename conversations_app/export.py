"""Stored conversations as JSON lines (`manage.py export_conversations`), streamed: conversations
are read a chunk at a time on a server-side cursor, and each one's turns and items with two
queries of its own, so memory holds one conversation, never the whole store.

One line per conversation (`conversation_line`), or one per turn (`turn_lines`); the shape is
documented in docs/api.md#exporting-conversations. Times are ISO 8601 in UTC. Deleted responses
are included (marked `deleted`): this is the operator's copy, not the API's view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse


@dataclass
class Selection:
    """Which conversations: every filter given must hold."""

    owner: str | None = None
    model: str | None = None  # the conversation has a turn of this model
    since: datetime | None = None  # active at or after: its last turn is not older
    until: datetime | None = None  # begun at or before
    conversation_ids: list[str] = field(default_factory=list)
    include_deleted: bool = False  # conversations deleted through the API, not yet purged

    def conversations(self) -> QuerySet[Conversation]:
        rows = Conversation.objects.all()
        if not self.include_deleted:
            rows = rows.filter(deleted_at__isnull=True)
        if self.owner is not None:
            rows = rows.filter(owner=self.owner)
        if self.model is not None:
            rows = rows.filter(Exists(StoredResponse.objects.filter(conversation=OuterRef("pk"), model=self.model)))
        if self.since is not None:
            rows = rows.filter(updated_at__gte=self.since)
        if self.until is not None:
            rows = rows.filter(created_at__lte=self.until)
        if self.conversation_ids:
            rows = rows.filter(pk__in=self.conversation_ids)
        return rows.order_by("created_at", "pk")


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _turn(row: StoredResponse, items: dict[int, list[dict[str, Any]]] | None) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "id": row.id, "previous_response_id": row.previous_response_id, "depth": row.depth,
        "model": row.model, "provider": row.provider, "status": row.status, "owner": row.owner,
        "subject": row.subject, "created_at": _time(row.created_at), "completed_at": _time(row.completed_at),
        "instructions": row.instructions, "settings": row.settings,
        "usage": {"input_tokens": row.input_tokens, "cached_tokens": row.cached_tokens,
                  "output_tokens": row.output_tokens, "reasoning_tokens": row.reasoning_tokens}
        if row.usage_reported else None,
        "cost_usd": str(row.cost_usd) if row.cost_usd is not None else None,
        "error": row.error, "incomplete_details": row.incomplete_details, "deleted": row.deleted_at is not None,
    }
    if items is not None:
        turn["input"] = items.get(Item.Kind.INPUT, [])
        turn["output"] = items.get(Item.Kind.OUTPUT, [])
    return turn


def _turns(conversation: Conversation) -> QuerySet[StoredResponse]:
    return StoredResponse.objects.filter(conversation=conversation).order_by("depth", "created_at", "pk")


def _items_by_turn(conversation: Conversation) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Each turn's input and output items, in order: one query for the whole conversation."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    rows = (Item.objects.filter(response__conversation=conversation).order_by("response_id", "kind", "position")
            .values_list("response_id", "kind", "data"))
    for response_id, kind, data in rows.iterator(chunk_size=2000):
        out[response_id][kind].append(data)
    return out


def conversation_line(conversation: Conversation) -> dict[str, Any]:
    """A chain's items are in its turns (`input`, `output`); an API conversation's are in `items`,
    in the conversation's order, each naming the turn it came from (null: added by the client)."""
    line: dict[str, Any] = {
        "object": "conversation", "id": conversation.id, "kind": conversation.kind, "owner": conversation.owner,
        "model": conversation.model, "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at), "metadata": conversation.metadata,
        "deleted": conversation.deleted_at is not None,
    }
    if conversation.kind == Conversation.Kind.API:
        line["turns"] = [_turn(row, None) for row in _turns(conversation)]
        entries = (ConversationItem.objects.filter(conversation=conversation).order_by("seq")
                   .values_list("item__response_id", "item__data"))
        line["items"] = [{"response_id": response_id, "item": data}
                         for response_id, data in entries.iterator(chunk_size=2000)]
    else:
        items = _items_by_turn(conversation)
        line["turns"] = [_turn(row, items.get(row.id, {})) for row in _turns(conversation)]
    return line


def turn_lines(conversation: Conversation) -> Iterator[dict[str, Any]]:
    """One line per turn, with its own input and output items, whatever the conversation's kind."""
    items = _items_by_turn(conversation)
    for row in _turns(conversation):
        yield {"object": "turn", "conversation_id": conversation.id, "conversation_kind": conversation.kind,
               **_turn(row, items.get(row.id, {}))}


def export(selection: Selection, *, per: str = "conversation") -> Iterator[dict[str, Any]]:
    for conversation in selection.conversations().iterator(chunk_size=200):
        if per == "turn":
            yield from turn_lines(conversation)
        else:
            yield conversation_line(conversation)
