"""Stored conversations: a chain of responses, each holding only its own input and output items.

A conversation's history is never copied: a response points at its predecessor and keeps its
depth in the chain, so the full context of any response is one recursive query over the
(small) response rows plus one indexed read of their items. Storage grows linearly with turns.

A turn is written `in_progress` (with its input items) before its id reaches the client, and
settled in place when it ends; `worker` names the process running it, so a turn whose worker
died can be found (via `WorkerLease`) and settled by another.

Only conversations_app.store touches these models.
"""

from __future__ import annotations

from django.db import models
from django_prometheus.models import ExportModelOperationsMixin

# ExportModelOperationsMixin(name) builds its class at run time, which mypy cannot follow: each
# model that uses it ignores mypy's "Unsupported dynamic base class" (misc) on its class line.


class Conversation(ExportModelOperationsMixin("conversation"), models.Model):  # type: ignore[misc]
    """Either a chain: one per chain root, branches from any response stay in the root's
    conversation; or a conversation of the Conversations API, created by a client, whose items are
    listed, in order, by its `ConversationItem` rows."""

    class Kind(models.TextChoices):
        CHAIN = "chain"
        API = "api"

    id = models.CharField(primary_key=True, max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHAIN)
    # The Conversations API's metadata (16 string pairs); unused for chains.
    metadata = models.JSONField(default=dict, blank=True)
    # The sequence number the next appended item gets: taken (with the row lock) by the
    # transaction that appends, so items are ordered as their transactions commit.
    next_item_seq = models.BigIntegerField(default=0)
    # Deleted through the API: hidden at once, its rows removed in batches afterwards.
    deleted_at = models.DateTimeField(null=True, blank=True)
    owner = models.CharField(max_length=200, blank=True, default="")  # indexed in Meta
    model = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(db_index=True)
    turn_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-updated_at"]
        # Declared here rather than with db_index, which on Postgres also builds a second index
        # for LIKE 'prefix%' (varchar_pattern_ops) that nothing queries: every index is written on
        # every turn (migration 0008).
        indexes = [models.Index(fields=["owner"], name="conversation_owner")]

    def __str__(self) -> str:
        return self.id


class StoredResponse(ExportModelOperationsMixin("stored_response"), models.Model):  # type: ignore[misc]
    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        INCOMPLETE = "incomplete"
        FAILED = "failed"
        CANCELLED = "cancelled"  # a background response its client cancelled

    id = models.CharField(primary_key=True, max_length=64)
    # Looked up through the (conversation, depth) index, whose first column it is.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="responses",
                                     db_index=False)
    previous_response = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="followups", db_index=False
    )
    # 0 for the first turn of a conversation; orders the chain without walking it.
    depth = models.PositiveIntegerField(default=0)
    owner = models.CharField(max_length=200, blank=True, default="")
    # Who made it: an API key (`key:12`), an OIDC subject, '' with auth off (filters, usage by key).
    subject = models.CharField(max_length=200, blank=True, default="")
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    # None (no instructions) is not "": the Response object echoes null. Changing it needs a migration.
    instructions = models.TextField(null=True, blank=True)  # noqa: DJ001
    # The request settings echoed in the Response object (temperature, tools, metadata, ...).
    settings = models.JSONField(default=dict)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # False when the upstream reported no usage: shown as `usage: null`, never as an estimate.
    usage_reported = models.BooleanField(default=True)
    # USD at the model's configured prices when the turn was served; null when it has none.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    incomplete_details = models.JSONField(null=True, blank=True)
    # A deleted response is hidden from the API and cannot be chained from, but its items stay
    # so that responses already built on it keep their context.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # While in_progress: the WorkerLease id of the process running the turn.
    worker = models.CharField(max_length=100, blank=True, default="")
    # Why the turn stopped early, for operators (the API shows only status `incomplete`):
    # client_gone, shutdown, worker_lost, expired; empty for a turn that ran to its end.
    interrupted = models.CharField(max_length=20, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        # Indexes here rather than db_index on the fields: see Conversation.Meta (migration 0008).
        indexes = [
            models.Index(fields=["conversation", "depth"]),
            models.Index(fields=["owner"], name="response_owner"),
            models.Index(fields=["previous_response"], name="response_previous"),
            # The sweep for turns left behind reads only the (few) rows still in progress.
            models.Index(fields=["worker"], condition=models.Q(status="in_progress"), name="response_in_progress"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Item(ExportModelOperationsMixin("item"), models.Model):  # type: ignore[misc]
    class Kind(models.IntegerChoices):
        INPUT = 0
        OUTPUT = 1

    # None for an item a client added to an API conversation directly (not a turn's input or output).
    # Looked up through item_unique_position (response, kind, position), whose first column it is.
    response = models.ForeignKey(StoredResponse, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="items", db_index=False)
    kind = models.PositiveSmallIntegerField(choices=Kind.choices)
    position = models.PositiveIntegerField()
    # The public id (msg_..., fc_...). Not unique: a client may replay items with their ids.
    item_id = models.CharField(max_length=100)
    type = models.CharField(max_length=40)
    data = models.JSONField()

    class Meta:
        ordering = ["response", "kind", "position"]
        constraints = [
            models.UniqueConstraint(fields=["response", "kind", "position"], name="item_unique_position"),
        ]

    def __str__(self) -> str:
        return self.item_id


class ConversationItem(ExportModelOperationsMixin("conversation_item"), models.Model):  # type: ignore[misc]
    """An item's place in an API conversation. The item itself is an `Item` (a turn's input or
    output, or one the client added), so responses chained with previous_response_id and responses
    in a conversation share one model of stored items; this row only says where it comes in order."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="entries")
    seq = models.BigIntegerField()
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    # The item's public id, unique in the conversation: GET/DELETE .../items/{item_id} and `after`.
    public_id = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="conversation_item_seq"),
            models.UniqueConstraint(fields=["conversation", "public_id"], name="conversation_item_public_id"),
        ]

    def __str__(self) -> str:
        return self.public_id


class UsageDay(ExportModelOperationsMixin("usage_day"), models.Model):  # type: ignore[misc]
    """Usage per day, model, provider, owner and caller (an API key `key:12`, an OIDC subject, or ''
    with auth off): a rollup kept as turns end (conversations_app.usage), so usage and cost pages
    never scan the responses. Every turn counts, stored or not."""

    day = models.DateField()
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True, default="")
    owner = models.CharField(max_length=200, blank=True, default="")
    subject = models.CharField(max_length=200, blank=True, default="")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "model", "provider", "owner", "subject"], name="usage_day_key"),
        ]
        indexes = [models.Index(fields=["subject", "day"]), models.Index(fields=["owner", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.owner or '-'} {self.subject or '-'}"


class WorkerLease(ExportModelOperationsMixin("worker_lease"), models.Model):  # type: ignore[misc]
    """A gateway worker process that may be running turns, renewed by its heartbeat.

    A turn left `in_progress` belongs to a dead worker when its lease is gone or stale, or when the
    lease's process no longer exists on this host; another worker then settles it `incomplete`.
    """

    id = models.CharField(primary_key=True, max_length=100)  # host:pid:random
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.id
