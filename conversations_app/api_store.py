"""The Conversations API's storage: conversations a client creates, their items in order, and the
turns that run in them (`conversation` on POST /v1/responses).

A conversation of the API is a `Conversation` row of kind `api`. Its items are `Item` rows, the
same model that holds every response's input and output: a turn's items belong to its response,
an item the client adds directly belongs to none. `ConversationItem` rows put them in order: each
append takes the next sequence numbers from the conversation row, whose lock it holds until it
commits, so concurrent turns land in the order they commit and none is lost. Appending writes
only the new items; loading a conversation is one query whatever its length; listing pages by
(conversation, seq), never with an OFFSET.

Deleting a conversation hides it at once and removes its rows in batches (`purge_deleted`).
Only this module and conversations_app.store touch the models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from conversations_app import db_connection
from conversations_app.instrumented import InstrumentedApiStore
from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from conversations_app.store import ItemPage, UnknownCursor, can_exist, new_conversation_id

API = Conversation.Kind.API


@dataclass
class ApiConversation:
    id: str
    created_at: datetime
    metadata: dict[str, str]


def _conversation(row: Conversation) -> ApiConversation:
    return ApiConversation(row.id, row.created_at, row.metadata)


class ApiConversationStore:
    @property
    def backend(self) -> str:
        return db_connection.backend()

    def _visible(self, conversation_id: str, owner: str) -> QuerySet[Conversation]:
        if not can_exist(conversation_id):
            return Conversation.objects.none()
        return Conversation.objects.filter(pk=conversation_id, owner=owner, kind=API, deleted_at__isnull=True)

    # --- conversations -------------------------------------------------------------------

    def create_conversation(self, owner: str, metadata: dict[str, str], items: list[dict[str, Any]]) -> ApiConversation:
        now = timezone.now()
        with transaction.atomic():
            row = Conversation.objects.create(id=new_conversation_id(), kind=API, owner=owner, model="",
                                              created_at=now, updated_at=now, metadata=metadata)
            if items:
                self._append(row.id, Item.objects.bulk_create(
                    [_free_item(position, data) for position, data in enumerate(items)]))
        return _conversation(row)

    def get_conversation(self, conversation_id: str, owner: str) -> ApiConversation | None:
        row = self._visible(conversation_id, owner).first()
        return _conversation(row) if row is not None else None

    def update_conversation(self, conversation_id: str, owner: str,
                            metadata: dict[str, str]) -> ApiConversation | None:
        if not self._visible(conversation_id, owner).update(metadata=metadata, updated_at=timezone.now()):
            return None
        return self.get_conversation(conversation_id, owner)

    def delete_conversation(self, conversation_id: str, owner: str) -> bool:
        """Hidden from now on (every route answers 404); its rows go in batches (purge_deleted)."""
        return self._visible(conversation_id, owner).update(deleted_at=timezone.now()) == 1

    # --- items ---------------------------------------------------------------------------

    def add_items(self, conversation_id: str, owner: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Append items the client gives; the items as stored (an id already in the conversation is
        replaced by a new one), or None when there is no such conversation."""
        with transaction.atomic():
            if not self._visible(conversation_id, owner).select_for_update().exists():
                return None
            rows = Item.objects.bulk_create([_free_item(position, data) for position, data in enumerate(items)])
            return self._append(conversation_id, rows)

    def referenced_items(self, conversation_id: str, owner: str, item_ids: list[str]) -> list[dict[str, Any]] | None:
        """The conversation's items with these ids (what `item_reference`s among new items name), or
        None when there is no such conversation: one indexed read for the ids, not the whole history."""
        if not self._visible(conversation_id, owner).exists():
            return None
        wanted = [item_id for item_id in item_ids if can_exist(item_id)]
        return list(ConversationItem.objects.filter(conversation_id=conversation_id, public_id__in=wanted)
                    .order_by("seq").values_list("item__data", flat=True))

    def items(self, conversation_id: str, owner: str) -> list[dict[str, Any]] | None:
        """Every item in order (a turn's context): one query, whatever the length."""
        if not self._visible(conversation_id, owner).exists():
            return None
        return list(ConversationItem.objects.filter(conversation_id=conversation_id).order_by("seq")
                    .values_list("item__data", flat=True))

    def list_items(self, conversation_id: str, owner: str, *, limit: int, order: Literal["asc", "desc"],
                   after: str | None) -> ItemPage | None:
        if not self._visible(conversation_id, owner).exists():
            return None
        entries = ConversationItem.objects.filter(conversation_id=conversation_id)
        if after:
            # (conversation, public_id) is unique: no ORDER BY for the planner to honour (.first() adds one).
            found = list(entries.filter(public_id=after).values_list("seq", flat=True)[:1]) if can_exist(after) else []
            seq = found[0] if found else None
            if seq is None:
                raise UnknownCursor(after)
            entries = entries.filter(seq__gt=seq) if order == "asc" else entries.filter(seq__lt=seq)
        entries = entries.order_by("seq" if order == "asc" else "-seq")
        page = list(entries.values_list("item__data", flat=True)[: limit + 1])
        return ItemPage(page[:limit], has_more=len(page) > limit)

    def get_item(self, conversation_id: str, owner: str, item_id: str) -> dict[str, Any] | Literal[False] | None:
        """The item; None when the conversation does not exist, False when the item does not."""
        if not self._visible(conversation_id, owner).exists():
            return None
        found = list(ConversationItem.objects.filter(conversation_id=conversation_id, public_id=item_id)
                     .values_list("item__data", flat=True)[:1]) if can_exist(item_id) else []
        return found[0] if found else False

    def delete_item(self, conversation_id: str, owner: str, item_id: str) -> bool | None:
        """Take the item out of the conversation (a turn's item stays with its response); None when
        the conversation does not exist, False when the item does not."""
        with transaction.atomic():
            if not self._visible(conversation_id, owner).select_for_update().exists():
                return None
            entry = (ConversationItem.objects.filter(conversation_id=conversation_id, public_id=item_id)
                     .select_related("item").first()) if can_exist(item_id) else None
            if entry is None:
                return False
            entry.delete()
            if entry.item.response_id is None:
                entry.item.delete()
            Conversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())
            return True

    # --- turns ---------------------------------------------------------------------------

    def append_turn(self, conversation_id: str, response_id: str, model: str, tokens: dict[str, int]) -> int:
        """Count a turn of the conversation and put its input and output items at its end; called
        inside the transaction that settles the turn. Returns how many items were appended."""
        rows = list(Item.objects.filter(response_id=response_id).order_by("kind", "position"))
        return len(self._append(conversation_id, rows, turn=(model, tokens)))

    def _append(self, conversation_id: str, rows: list[Item],
                turn: tuple[str, dict[str, int]] | None = None) -> list[dict[str, Any]]:
        """Number the rows after the conversation's last item and list them in it, inside the
        caller's transaction. The UPDATE takes the conversation row's lock, held until that
        transaction commits: appends are serialised, in commit order. `turn`: the turn's model and
        token counts, counted in the same statement."""
        if not rows and turn is None:
            return []
        end = _take_sequence(conversation_id, len(rows), turn)
        if end is None:
            return []
        taken = set(ConversationItem.objects.filter(
            conversation_id=conversation_id, public_id__in=[row.item_id for row in rows])
            .values_list("public_id", flat=True))
        for row in rows:
            if row.item_id in taken or not row.item_id:
                row.item_id = _fresh_id(row.item_id)
                row.data = {**row.data, "id": row.item_id}
                row.save(update_fields=["item_id", "data"])
            taken.add(row.item_id)
        ConversationItem.objects.bulk_create([
            ConversationItem(conversation_id=conversation_id, seq=end - len(rows) + index, item=row,
                             public_id=row.item_id) for index, row in enumerate(rows)])
        return [row.data for row in rows]

    # --- removal -------------------------------------------------------------------------

    def purge_deleted(self, *, batch_size: int = 500, progress: Callable[[str], None] | None = None,
                      dry_run: bool = False) -> int:
        """Remove conversations deleted through the API: their entries, items and turns, in batches
        of `batch_size` rows, each its own short transaction. Returns how many conversations went
        (or would go, with dry_run)."""
        return self._purge(Conversation.objects.filter(kind=API, deleted_at__isnull=False),
                           batch_size=batch_size, progress=progress, dry_run=dry_run)

    def purge_idle(self, idle_seconds: float, *, batch_size: int = 500,
                   progress: Callable[[str], None] | None = None, dry_run: bool = False) -> int:
        """Remove conversations of the API (not deleted) with no change for `idle_seconds`, in
        batches like `purge_deleted`. (Chains are purged by ConversationStore.purge_idle.)

        They are first marked deleted (hidden from every route, `batch_size` rows an UPDATE), then
        removed: a purge interrupted halfway never leaves a visible conversation with part of its
        items gone, and the next run finishes it as one deleted through the API."""
        idle = Conversation.objects.filter(kind=API, deleted_at__isnull=True,
                                           updated_at__lt=timezone.now() - timedelta(seconds=idle_seconds))
        if dry_run:
            return idle.count()
        hidden_at = timezone.now()
        while ids := list(idle.order_by().values_list("pk", flat=True)[:batch_size]):
            Conversation.objects.filter(pk__in=ids, deleted_at__isnull=True).update(deleted_at=hidden_at)
        return self._purge(Conversation.objects.filter(kind=API, deleted_at=hidden_at), batch_size=batch_size,
                           progress=progress, dry_run=False)

    def _purge(self, conversations: QuerySet[Conversation], *, batch_size: int,
               progress: Callable[[str], None] | None, dry_run: bool) -> int:
        if dry_run:
            return conversations.count()
        purged = 0
        ids = list(conversations.order_by().values_list("pk", flat=True))
        for conversation_id in ids:
            for removed in self.remove_in_batches(conversation_id, batch_size=batch_size):
                if progress is not None:
                    progress(f"{conversation_id} ({purged + 1}/{len(ids)}): {removed}")
            purged += 1
        return purged

    def remove_in_batches(self, conversation_id: str, *, batch_size: int = 500) -> Iterator[str]:
        """Delete one conversation's rows, a batch per transaction, saying what each batch removed:
        the items the client added (their entries go with them), the other entries, its turns'
        items, its turns (the latest first, so no batch cascades down a chain), then the conversation.
        Each batch is read as ids and deleted by id, so no transaction holds more than
        `batch_size` rows whatever the conversation's size."""
        entries = ConversationItem.objects.filter(conversation_id=conversation_id)
        turns = StoredResponse.objects.filter(conversation_id=conversation_id)
        steps: tuple[tuple[str, QuerySet[Any]], ...] = (
            ("added items", Item.objects.filter(response__isnull=True, pk__in=entries.values("item_id")).order_by()),
            ("entries", entries.order_by()),
            ("turn items", Item.objects.filter(response__in=turns.values("pk")).order_by()),
            ("turns", turns.order_by("-depth")),
        )
        for label, rows in steps:
            total = 0
            while ids := list(rows.values_list("pk", flat=True)[:batch_size]):
                with transaction.atomic():
                    rows.model.objects.filter(pk__in=ids).only("pk").delete()
                total += len(ids)
                yield f"{total} {label}"
        Conversation.objects.filter(pk=conversation_id).delete()
        yield "conversation"


def _take_sequence(conversation_id: str, count: int, turn: tuple[str, dict[str, int]] | None) -> int | None:
    """Reserve `count` sequence numbers (and count the turn, when there is one) in one UPDATE ...
    RETURNING, which locks the conversation row until the caller's transaction ends. Returns the
    conversation's next sequence number after the reservation; None when it has been deleted
    meanwhile (a turn that ends after its conversation was deleted is not appended)."""
    assert connection.in_atomic_block, "appends must run inside the transaction that writes them"  # noqa: S101
    table = Conversation._meta.db_table
    sets = ["next_item_seq = next_item_seq + %s", "updated_at = %s"]
    params: list[Any] = [count, timezone.now()]
    if turn is not None:
        model, tokens = turn
        sets += ["model = %s", "turn_count = turn_count + 1", "input_tokens = input_tokens + %s",
                 "output_tokens = output_tokens + %s"]
        params += [model, tokens.get("input_tokens", 0), tokens.get("output_tokens", 0)]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE id = %s AND deleted_at IS NULL "  # noqa: S608 - constant names
                       "RETURNING next_item_seq", [*params, conversation_id])
        row = cursor.fetchone()
    return int(row[0]) if row is not None else None


def _free_item(position: int, data: dict[str, Any]) -> Item:
    """An item the client adds to a conversation itself: it belongs to no response."""
    return Item(response=None, kind=Item.Kind.INPUT, position=position, item_id=data.get("id", ""),
                type=data.get("type", "message"), data=data)


def _fresh_id(old: str) -> str:
    from responses_app.ids import new_id

    return new_id(old.partition("_")[0] or "item")


# Callers import this: every operation is counted, timed and traced (conversations_app.instrumented).
api_conversations = InstrumentedApiStore(ApiConversationStore())
