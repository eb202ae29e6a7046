"""The conversation store: the only place that touches conversation models.

Every read and write of conversations, responses and items goes through `ConversationStore`, so
one wrapper (the instrumented store) can time and trace all of them. It returns plain data,
never querysets, and owns the transactions.

A turn whose id reaches the client before its end (a stream) is written twice, each time in one
short transaction: `open_turn` before its id is sent (the response row `in_progress`, its input
items, the conversation's turn count), and `finish_turn` when it ends (status, usage, cost, output
items, token counters). A turn heard of only with its result (JSON) is written once, whole, by
`save_turn`. On Postgres each of these writes of a chain turn is a single statement
(conversations_app.turn_statements, called only from here). A turn that never
got to its end is settled by `settle_abandoned` (its worker died) or `settle_expired` (it is older
than any turn can run); `discard_turn` removes one whose upstream failed before the client heard
of it, so a failed request leaves nothing behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from conversations_app import chain_memory, db_connection, group_commit, turn_statements
from conversations_app.instrumented import InstrumentedStore
from conversations_app.models import Conversation, Item, StoredResponse, WorkerLease

IN_PROGRESS = StoredResponse.Status.IN_PROGRESS.value
CANCELLED = StoredResponse.Status.CANCELLED.value
COMPLETED = StoredResponse.Status.COMPLETED.value
INCOMPLETE = StoredResponse.Status.INCOMPLETE.value


@dataclass(frozen=True)
class Chain:
    """What a follow-up turn needs from its predecessor: where it sits and everything said so far."""

    response_id: str
    conversation_id: str
    depth: int
    # Input and output items of every response in the chain, oldest first.
    items: list[dict[str, Any]]
    # The anchor has not ended yet: its output is not known, so nothing can follow it.
    in_progress: bool = False


@dataclass
class OpenTurn:
    """A turn as it starts: written `in_progress` before the client hears of its id."""

    response_id: str
    owner: str
    model: str
    provider: str
    created_at: datetime
    instructions: str | None
    settings: dict[str, Any]
    input_items: list[dict[str, Any]]
    # The WorkerLease id of the process running it ('' outside a gunicorn worker).
    worker: str = ""
    # The API conversation it runs in (conversations_app.api_store), '' for a chain's turn.
    api_conversation: str = ""
    # Who made it (identity_app.identity.Identity.subject), '' with auth off.
    subject: str = ""


@dataclass
class Settlement:
    """How a turn ended, written over its `in_progress` row."""

    response_id: str
    conversation_id: str
    status: str
    # The provider entry that answered (a fallback's, when one took over).
    provider: str
    completed_at: datetime | None
    usage: dict[str, int] | None
    output_items: list[dict[str, Any]]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    # At the model's configured prices (models[].pricing); None when it has none.
    cost_usd: float | None = None
    # Why it stopped early (client_gone, shutdown, ...), '' when it ran to its end.
    interrupted: str = ""
    # Items in the whole chain after this turn, for the span (not stored).
    message_count: int = 0
    # The API conversation its items are appended to when it ends completed or incomplete.
    api_conversation: str = ""

    def __post_init__(self) -> None:
        # What the upstream wrote is stored as it came but for NUL, which Postgres text and jsonb
        # cannot hold: a model's (or an upstream error's) U+0000 is kept as U+FFFD. (A request's
        # NUL is a 400 at the edge, gateway_project.json_body.) Written as it was, the whole turn
        # failed to store: a 503 after the upstream had answered, and a write deferred for ever.
        self.output_items = _without_nul(self.output_items)
        self.error = _without_nul(self.error)
        self.incomplete_details = _without_nul(self.incomplete_details)

    @property
    def appends(self) -> bool:
        return bool(self.api_conversation) and self.status in (COMPLETED, INCOMPLETE)


def _without_nul(value: Any) -> Any:
    """`value` (JSON data) with U+0000 in its strings and keys replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Lease:
    id: str
    host: str
    pid: int
    heartbeat_at: datetime


@dataclass
class StoredTurn:
    """A stored response as the API shows it."""

    response_id: str
    conversation_id: str
    previous_response_id: str | None
    owner: str
    model: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    instructions: str | None
    settings: dict[str, Any]
    usage: dict[str, int] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    output_items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ItemPage:
    items: list[dict[str, Any]]
    has_more: bool


class UnknownCursor(Exception):
    """The `after` cursor names no input item of that response."""


# One round trip for a chain of any depth: walk previous_response_id inside the database.
_CHAIN_IDS_SQL = f"""
WITH RECURSIVE chain(id, previous_response_id) AS (
    SELECT id, previous_response_id FROM {StoredResponse._meta.db_table} WHERE id = %s
    UNION ALL
    SELECT r.id, r.previous_response_id FROM {StoredResponse._meta.db_table} r
    JOIN chain c ON r.id = c.previous_response_id
)
SELECT id FROM chain
"""  # noqa: S608 - the table name is the model's; the id is a query parameter


# Whether a response may still be seen by its owner: what a kept chain is checked by (get_chain).
_VISIBLE_SQL = (f"SELECT 1 FROM {StoredResponse._meta.db_table} "  # noqa: S608 - the table name is the model's
                "WHERE id = %s AND owner = %s AND deleted_at IS NULL")


def new_conversation_id() -> str:
    return "conv_" + secrets.token_hex(24)


def release_connection() -> None:
    """Give the database connection back (to the pool) before a long upstream wait.

    A stream can last minutes; holding a connection for it would make open streams, not
    queries, the thing that exhausts Postgres. Inside a transaction (tests) there is nothing to do,
    and a greenlet that never made a connection object is not made one (db_connection).
    """
    db_connection.release()


def can_exist(public_id: str) -> bool:
    """Whether an id a client sent could name a stored row. Ids come from URLs and query strings
    too, where a NUL (which Postgres text cannot hold) or an id longer than any stored one would
    make the query fail instead of finding nothing."""
    return 0 < len(public_id) <= _MAX_ID_LENGTH and "\x00" not in public_id


class ConversationStore:
    @property
    def backend(self) -> str:
        return db_connection.backend()

    def _visible(self, owner: str, response_id: str) -> QuerySet[StoredResponse]:
        if not can_exist(response_id):
            return StoredResponse.objects.none()
        return StoredResponse.objects.filter(owner=owner, deleted_at__isnull=True, pk=response_id)

    def get_chain(self, response_id: str, owner: str) -> Chain | None:
        """The caller's own visible response and everything said up to its end: from this
        worker's memory when it is kept there (conversations_app.chain_memory), once Postgres has
        said the response may still be seen, else read whole."""
        if (kept := chain_memory.memory.recall(response_id, owner)) is not None:
            with connection.cursor() as cursor:
                cursor.execute(_VISIBLE_SQL, [response_id, owner])
                if cursor.fetchone() is not None:
                    return kept
            chain_memory.memory.forget(response_id)
            return None
        size = None
        if connection.vendor == "postgresql":
            if not can_exist(response_id):
                return None
            read = turn_statements.read_chain(response_id, owner)
            if read is None:
                return None
            conversation_id, depth, status, items, size = read
            chain = Chain(response_id, conversation_id, depth, items, in_progress=status == IN_PROGRESS)
        else:
            anchor = self._visible(owner, response_id).values("conversation_id", "depth", "status").first()
            if anchor is None:
                return None
            rows = (
                Item.objects.filter(response_id__in=RawSQL(_CHAIN_IDS_SQL, [response_id]))  # noqa: S611 - constant SQL
                .order_by("response__depth", "kind", "position")
                .values_list("data", flat=True)
            )
            chain = Chain(response_id, anchor["conversation_id"], anchor["depth"], list(rows),
                          in_progress=anchor["status"] == IN_PROGRESS)
        chain_memory.memory.remember_read(chain, owner, size)
        return chain

    def remember_chain(self, chain: Chain, owner: str, *, parent: Chain | None,
                       added: list[dict[str, Any]]) -> None:
        """A settled turn was stored: keep the context after it (`parent`'s items, then `added`,
        what the turn stored) for the turn that follows it (conversations_app.chain_memory)."""
        chain_memory.memory.remember_turn(chain, owner, parent=parent, added=added)

    def open_turn(self, turn: OpenTurn, parent: Chain | None) -> str:
        """Write a starting turn atomically; it is committed when this returns. Returns its conversation id."""
        if _in_one_statement(turn.api_conversation):
            conversation_id = parent.conversation_id if parent is not None else new_conversation_id()
            turn_statements.write_turn(conversation=_chain_conversation(turn, parent, conversation_id, {}),
                                       response=_response_row(turn, parent, conversation_id, {
                                           "provider": turn.provider, "status": IN_PROGRESS,
                                           "usage_reported": False, "worker": turn.worker}),
                                       input_items=turn.input_items, output_items=None)
            return conversation_id
        connection.ensure_connection()
        group_commit.connected()  # a stream waiting to call its upstream may now (Turn.write_opening_beside)
        with transaction.atomic():
            if turn.api_conversation:
                # Its items join the conversation when it ends (Settlement.appends), not before.
                conversation_id, depth = turn.api_conversation, 0
            elif parent is None:
                conversation = Conversation.objects.create(
                    id=new_conversation_id(), owner=turn.owner, model=turn.model,
                    created_at=turn.created_at, updated_at=turn.created_at, turn_count=1,
                )
                conversation_id, depth = conversation.id, 0
            else:
                conversation_id, depth = parent.conversation_id, parent.depth + 1
                # F() updates: concurrent turns on one conversation must not lose counts.
                Conversation.objects.filter(pk=conversation_id).update(
                    updated_at=timezone.now(), model=turn.model, turn_count=F("turn_count") + 1)
            StoredResponse.objects.create(
                id=turn.response_id, conversation_id=conversation_id,
                previous_response_id=parent.response_id if parent else None, depth=depth,
                owner=turn.owner, subject=turn.subject, model=turn.model, provider=turn.provider, status=IN_PROGRESS,
                created_at=turn.created_at, instructions=turn.instructions, settings=turn.settings,
                usage_reported=False, worker=turn.worker,
            )
            Item.objects.bulk_create(
                [_item(turn.response_id, Item.Kind.INPUT, i, data) for i, data in enumerate(turn.input_items)])
        return conversation_id

    def save_turn(self, turn: OpenTurn, settlement: Settlement, parent: Chain | None) -> str:
        """Write a whole turn at once (one the client only hears of with its result), atomically.
        Returns its conversation id."""
        usage = settlement.usage or {}
        tokens = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
        if _in_one_statement(turn.api_conversation):
            conversation_id = parent.conversation_id if parent is not None else new_conversation_id()
            turn_statements.write_turn(
                conversation=_chain_conversation(turn, parent, conversation_id, tokens),
                response=_response_row(turn, parent, conversation_id, {
                    "provider": settlement.provider, "status": settlement.status,
                    "completed_at": settlement.completed_at, "error": settlement.error,
                    "incomplete_details": settlement.incomplete_details,
                    "usage_reported": settlement.usage is not None, "cost_usd": settlement.cost_usd,
                    "interrupted": settlement.interrupted, **{k: usage.get(k, 0) for k in _USAGE_FIELDS}}),
                input_items=turn.input_items, output_items=settlement.output_items)
            return conversation_id
        with transaction.atomic():
            if turn.api_conversation:
                conversation_id, depth = turn.api_conversation, 0
            elif parent is None:
                conversation = Conversation.objects.create(
                    id=new_conversation_id(), owner=turn.owner, model=turn.model,
                    created_at=turn.created_at, updated_at=turn.created_at, turn_count=1, **tokens)
                conversation_id, depth = conversation.id, 0
            else:
                conversation_id, depth = parent.conversation_id, parent.depth + 1
                # F() updates: concurrent turns on one conversation must not lose counts.
                Conversation.objects.filter(pk=conversation_id).update(
                    updated_at=timezone.now(), model=turn.model, turn_count=F("turn_count") + 1,
                    **{name: F(name) + value for name, value in tokens.items()})
            StoredResponse.objects.create(
                id=turn.response_id, conversation_id=conversation_id,
                previous_response_id=parent.response_id if parent else None, depth=depth,
                owner=turn.owner, subject=turn.subject, model=turn.model, provider=settlement.provider,
                status=settlement.status,
                created_at=turn.created_at, completed_at=settlement.completed_at, instructions=turn.instructions,
                settings=turn.settings, error=settlement.error, incomplete_details=settlement.incomplete_details,
                usage_reported=settlement.usage is not None, cost_usd=settlement.cost_usd,
                interrupted=settlement.interrupted, **{k: usage.get(k, 0) for k in _USAGE_FIELDS},
            )
            Item.objects.bulk_create(
                [_item(turn.response_id, Item.Kind.INPUT, i, data) for i, data in enumerate(turn.input_items)]
                + [_item(turn.response_id, Item.Kind.OUTPUT, i, data)
                   for i, data in enumerate(settlement.output_items)])
            if settlement.appends:
                _append_turn(conversation_id, turn.response_id, turn.model, tokens)
        return conversation_id

    def check_available(self) -> None:
        """Take a database connection (raising when none can be had): before a turn pays an upstream
        for an answer it could not store. A live connection the group commit keeps for the turn's
        write (group_commit.warm_connection_alive) answers that without a checkout."""
        if not group_commit.warm_connection_alive():
            connection.ensure_connection()

    def finish_turn(self, settlement: Settlement) -> None:
        """Settle an opened turn in place, atomically."""
        usage = settlement.usage or {}
        outcome = {"provider": settlement.provider, "error": settlement.error,
                   "incomplete_details": settlement.incomplete_details,
                   "usage_reported": settlement.usage is not None, "cost_usd": settlement.cost_usd, "worker": "",
                   **{k: usage.get(k, 0) for k in _USAGE_FIELDS}}
        tokens = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
        if _in_one_statement(settlement.api_conversation):
            turn_statements.finish_turn(
                response_id=settlement.response_id, conversation_id=settlement.conversation_id,
                status=settlement.status, completed_at=settlement.completed_at, interrupted=settlement.interrupted,
                outcome=outcome, output_items=settlement.output_items, now=timezone.now(), tokens=tokens)
            return
        with transaction.atomic():
            row = StoredResponse.objects.filter(pk=settlement.response_id)
            updated = row.exclude(status=CANCELLED).update(
                status=settlement.status, completed_at=settlement.completed_at,
                interrupted=settlement.interrupted, **outcome)
            if not updated:
                # Its client cancelled it, and was answered `cancelled`: that stays; what the model
                # produced before the runner stopped is still kept (and billed). Two plain updates
                # rather than one CASE: the common path is the hot path of every stream.
                updated = row.update(**outcome)
            if not updated:
                return  # removed meanwhile, with its API conversation: nothing is left to settle
            Item.objects.bulk_create(
                [_item(settlement.response_id, Item.Kind.OUTPUT, i, data)
                 for i, data in enumerate(settlement.output_items)])
            if settlement.appends:
                model = StoredResponse.objects.filter(pk=settlement.response_id).values_list("model", flat=True).get()
                _append_turn(settlement.conversation_id, settlement.response_id, model,
                             {"input_tokens": usage.get("input_tokens", 0),
                              "output_tokens": usage.get("output_tokens", 0)})
            else:
                Conversation.objects.filter(pk=settlement.conversation_id).update(
                    updated_at=timezone.now(), input_tokens=F("input_tokens") + usage.get("input_tokens", 0),
                    output_tokens=F("output_tokens") + usage.get("output_tokens", 0),
                )

    def discard_turn(self, response_id: str, conversation_id: str, *, new_conversation: bool,
                     api_conversation: bool = False) -> None:
        """Remove an opened turn the client never heard of (its upstream failed first)."""
        with transaction.atomic():
            if api_conversation:  # not yet counted nor appended: that happens when a turn ends
                StoredResponse.objects.filter(pk=response_id).delete()
            elif new_conversation:
                Conversation.objects.filter(pk=conversation_id).delete()  # with the response and its items
            else:
                StoredResponse.objects.filter(pk=response_id).delete()
                Conversation.objects.filter(pk=conversation_id).update(turn_count=F("turn_count") - 1)

    def cancel_response(self, response_id: str, owner: str) -> StoredTurn | None:
        """Cancel a background response that is still running: it is `cancelled` from this moment,
        whatever its runner does next (the runner notices and stops its upstream call). A response
        that has already ended is left as it is. Returns the response as it now stands."""
        self._visible(owner, response_id).filter(status=IN_PROGRESS, settings__background=True).update(
            status=CANCELLED, interrupted="cancelled")
        return self.get_response(response_id, owner)

    def cancelled_among(self, response_ids: list[str]) -> list[str]:
        """Which of these (running here) have been cancelled, by a request any worker served."""
        if not response_ids:
            return []
        return list(StoredResponse.objects.filter(pk__in=response_ids, status=CANCELLED)
                    .values_list("pk", flat=True))

    def settle_abandoned(self, workers: list[str], reason: str) -> int:
        """Turns still in progress on workers that are gone: `incomplete`, with what was stored."""
        if not workers:
            return 0
        return StoredResponse.objects.filter(status=IN_PROGRESS, worker__in=workers).update(
            status=StoredResponse.Status.INCOMPLETE, interrupted=reason, worker="")

    def settle_expired(self, started_before: datetime) -> int:
        """Turns in progress for longer than any turn may run, whoever was running them."""
        return StoredResponse.objects.filter(status=IN_PROGRESS, created_at__lt=started_before).update(
            status=StoredResponse.Status.INCOMPLETE, interrupted="expired", worker="")

    # --- worker leases (conversations_app.models.WorkerLease) ------------------------------

    def renew_lease(self, lease_id: str, host: str, pid: int) -> None:
        now = timezone.now()
        if not WorkerLease.objects.filter(pk=lease_id).update(heartbeat_at=now):
            WorkerLease.objects.create(id=lease_id, host=host, pid=pid, started_at=now, heartbeat_at=now)

    def leases(self) -> list[Lease]:
        return [Lease(*row) for row in WorkerLease.objects.values_list("id", "host", "pid", "heartbeat_at")]

    def drop_leases(self, lease_ids: list[str]) -> None:
        WorkerLease.objects.filter(pk__in=lease_ids).delete()

    def get_response(self, response_id: str, owner: str) -> StoredTurn | None:
        record = self._visible(owner, response_id).first()
        if record is None:
            return None
        outputs = Item.objects.filter(response_id=response_id, kind=Item.Kind.OUTPUT).order_by("position")
        return StoredTurn(
            response_id=record.id, conversation_id=record.conversation_id,
            previous_response_id=record.previous_response_id, owner=record.owner, model=record.model,
            status=record.status, created_at=record.created_at, completed_at=record.completed_at,
            instructions=record.instructions, settings=record.settings,
            usage={k: getattr(record, k) for k in _USAGE_FIELDS} if record.usage_reported else None,
            error=record.error, incomplete_details=record.incomplete_details,
            output_items=[item.data for item in outputs],
        )

    def response_status(self, response_id: str, owner: str) -> str | None:
        """Just the status of a visible response (None when there is none): one indexed read, for
        following a turn that is still running (responses_app.replay)."""
        return self._visible(owner, response_id).values_list("status", flat=True).first()

    def delete_response(self, response_id: str, owner: str) -> bool:
        return self._visible(owner, response_id).update(deleted_at=timezone.now()) == 1

    def list_input_items(
        self, response_id: str, owner: str, *, limit: int, order: Literal["asc", "desc"], after: str | None
    ) -> ItemPage | None:
        if not self._visible(owner, response_id).exists():
            return None
        items = Item.objects.filter(response_id=response_id, kind=Item.Kind.INPUT)
        if after:
            if not can_exist(after):
                raise UnknownCursor(after)
            position = items.filter(item_id=after).values_list("position", flat=True).first()
            if position is None:
                raise UnknownCursor(after)
            items = items.filter(position__gt=position) if order == "asc" else items.filter(position__lt=position)
        items = items.order_by("position" if order == "asc" else "-position")
        page = [item.data for item in items[: limit + 1]]
        return ItemPage(page[:limit], has_more=len(page) > limit)

    def active_count(self, ttl_seconds: float) -> int:
        """Conversations with a turn within the TTL: the documented meaning of 'active'."""
        return Conversation.objects.filter(updated_at__gte=timezone.now() - timedelta(seconds=ttl_seconds)).count()

    def purge_idle(self, idle_seconds: float, *, batch_size: int = 500, dry_run: bool = False,
                   progress: Callable[[int], None] | None = None) -> int:
        """Delete chains (with their responses and items) without a turn for `idle_seconds`.

        In batches of `batch_size` conversations, each its own transaction that takes whole
        conversations, so a large purge never holds long locks or one huge transaction, and an
        interrupted one has left no conversation half-deleted: running it again continues with
        what is left. `progress` hears the running total after each batch. Returns how many
        conversations went (or would go, with dry_run). Conversations of the Conversations API are
        purged row batch by row batch instead (ApiConversationStore).
        """
        idle = Conversation.objects.filter(kind=Conversation.Kind.CHAIN,
                                           updated_at__lt=timezone.now() - timedelta(seconds=idle_seconds))
        if dry_run:
            return idle.count()
        purged = 0
        while ids := list(idle.order_by().values_list("pk", flat=True)[:batch_size]):
            with transaction.atomic():
                Conversation.objects.filter(pk__in=ids).delete()
            purged += len(ids)
            if progress is not None:
                progress(purged)
        return purged


# The longest public id column (Item.item_id); response ids are shorter still.
_MAX_ID_LENGTH = 100

_USAGE_FIELDS = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def _append_turn(conversation_id: str, response_id: str, model: str, tokens: dict[str, int]) -> None:
    """Inside the transaction that settles a turn of an API conversation: count it, and put its items
    at the end of the conversation (conversations_app.api_store)."""
    from conversations_app.api_store import api_conversations  # it imports this module

    api_conversations.inner.append_turn(conversation_id, response_id, model, tokens)


def _in_one_statement(api_conversation: str) -> bool:
    """A chain turn on Postgres is written in one statement per write (conversations_app.turn_statements);
    elsewhere, and in an API conversation, through the ORM in a transaction."""
    return not api_conversation and db_connection.vendor() == "postgresql"


def _chain_conversation(turn: OpenTurn, parent: Chain | None, conversation_id: str,
                        tokens: dict[str, int]) -> turn_statements.ConversationPart:
    return turn_statements.conversation_part(
        new_id=conversation_id if parent is None else None, existing_id=conversation_id if parent else None,
        owner=turn.owner, model=turn.model, at=turn.created_at, now=timezone.now(), tokens=tokens)


def _response_row(turn: OpenTurn, parent: Chain | None, conversation_id: str,
                  outcome: dict[str, Any]) -> dict[str, Any]:
    return {"id": turn.response_id, "conversation_id": conversation_id,
            "previous_response_id": parent.response_id if parent else None, "depth": parent.depth + 1 if parent else 0,
            "owner": turn.owner, "subject": turn.subject, "model": turn.model, "created_at": turn.created_at,
            "instructions": turn.instructions, "settings": turn.settings, **outcome}


def _item(response_id: str, kind: int, position: int, data: dict[str, Any]) -> Item:
    return Item(response_id=response_id, kind=kind, position=position,
                item_id=data.get("id", ""), type=data.get("type", "message"), data=data)


# Callers import this: every operation is counted, timed and traced (conversations_app.instrumented).
store = InstrumentedStore(ConversationStore())
