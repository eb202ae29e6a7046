"""A chain turn's read and writes as single Postgres statements: one round trip each.

Writing a turn through the ORM took a transaction of four or five statements (BEGIN, the
conversation, the response row, its items, COMMIT), each a round trip to Postgres and a pass
through the ORM's compiler; that was about a quarter of the CPU a small request cost. Here each
write is one statement whose parts are data-modifying CTEs, so it is atomic on its own (no
BEGIN/COMMIT), and Postgres checks the foreign keys between its parts when it ends:

- `save` (a turn heard of only with its result): the conversation (created, or counted in), the
  response row settled, and its input and output items;
- `open` (a stream, before its id is sent): the conversation, the row `in_progress`, its input items;
- `finish` (when the stream ends): the row settled (a cancelled one keeps its status, as
  `ConversationStore.finish_turn` documents), its output items, the conversation's counters, all
  only when the row still exists.

The read (`read_chain`, what a follow-up needs of the response it continues) is one statement too:
the anchor, checked as the caller's own and not deleted, and the items of its whole chain, walked
inside the database (or, when its conversation never branched below it, read as a range of it)
and aggregated into one JSON array, oldest first. Through the ORM it was two
queries, and each item a row decoded on its own by JSONField (the standard library's json): at
turn 50, a hundred decodes, the part of a turn that grew with the chain.

Row values are prepared as the ORM's insert prepares them (`_Table`: defaults filled in, JSON and
decimals through their fields' `get_db_prep_save`, so they are stored alike); a turn's items are
sent as one JSON array and unpacked by `jsonb_array_elements`, so they are encoded once, whatever
their number.
Postgres only, and the writes only for chain turns: ConversationStore keeps the ORM path for other
databases and for turns of the Conversations API, whose append needs its own reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import DecimalField, Field, JSONField, Model
from django_prometheus.models import model_inserts

from conversations_app import db_connection, group_commit
from conversations_app.models import Conversation, Item, StoredResponse
from gateway_project import fast_json

_CONVERSATIONS = Conversation._meta.db_table
_RESPONSES = StoredResponse._meta.db_table
_ITEMS = Item._meta.db_table
_CANCELLED = StoredResponse.Status.CANCELLED.value
_RESPONSE_FIELDS = {model_field.attname: model_field for model_field in StoredResponse._meta.concrete_fields}


@dataclass(frozen=True)
class _Table:
    """What an INSERT of one row of a model needs, worked out once per model: its columns, and
    which fields must prepare their value. JSON (psycopg's Jsonb) and decimals (rounded to the
    column's places) are stored in another form than the Python value, and go through the field's
    own `get_db_prep_save`, as in the ORM's INSERT; text, numbers, booleans and aware datetimes
    are passed as they are, which is what their fields' preparation returns for them."""

    columns: str
    placeholders: str
    fields: tuple[tuple[str, Field[Any, Any], bool], ...]  # (attribute name, field, prepared by the field)

    @classmethod
    @cache
    def of(cls, model: type[Model]) -> _Table:
        concrete = model._meta.concrete_fields
        quote = db_connection.for_preparing_values().ops.quote_name
        return cls(columns=", ".join(quote(model_field.column) for model_field in concrete),
                   placeholders=", ".join(["%s"] * len(concrete)),
                   fields=tuple((model_field.attname, model_field, isinstance(model_field, (JSONField, DecimalField)))
                                for model_field in concrete))


def _row(model: type[Model], values: dict[str, Any]) -> tuple[str, str, list[Any]]:
    """(columns, placeholders, parameters) of one row of `model`: `values` by attribute name
    (`conversation_id` for a foreign key), every other concrete field at its default."""
    table = _Table.of(model)
    preparer = db_connection.for_preparing_values()
    params = []
    for name, model_field, prepared in table.fields:
        value = values[name] if name in values else model_field.get_default()
        params.append(model_field.get_db_prep_save(value, preparer) if prepared else value)
    return table.columns, table.placeholders, params


def _items_select(source: str, kind: int, *, joined: str = "") -> str:
    """SELECT the Item rows of one kind from a JSON array parameter, in order (position from 0), as
    `ConversationStore._item` builds them. `source` is the response id: a parameter, or a column of
    the CTE `joined`."""
    tables = f"{joined}, " if joined else ""
    return (f"SELECT {source}, {kind}, e.ordinality - 1, COALESCE(e.value->>'id', ''), "  # noqa: S608 - constant
            f"COALESCE(e.value->>'type', 'message'), e.value "
            f"FROM {tables}jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(value, ordinality)")


_ITEM_COLUMNS = "response_id, kind, position, item_id, type, data"


@dataclass(frozen=True)
class ConversationPart:
    sql: str
    params: list[Any]
    # A new conversation row (counted in django_model_inserts_total, as the ORM's save counts it).
    inserts: bool
    # The existing conversation row it updates ("" for a new one): the order of a group commit.
    updates: str = ""


def conversation_part(*, new_id: str | None, existing_id: str | None, owner: str, model: str, at: datetime,
                      now: datetime, tokens: dict[str, int]) -> ConversationPart:
    """The CTE that creates the chain's conversation (its first turn) or counts the turn in (a
    follow-up: F()-style increments, so concurrent turns lose no counts)."""
    if new_id is not None:
        columns, placeholders, params = _row(Conversation, {
            "id": new_id, "owner": owner, "model": model, "created_at": at, "updated_at": at, "turn_count": 1,
            **tokens})
        return ConversationPart(
            f"conversation AS (INSERT INTO {_CONVERSATIONS} ({columns}) VALUES ({placeholders}))",  # noqa: S608
            params, inserts=True)
    increments = "".join(f", {name} = {name} + %s" for name in tokens)
    return ConversationPart(f"conversation AS (UPDATE {_CONVERSATIONS} SET updated_at = %s, model = %s, "  # noqa: S608
                            f"turn_count = turn_count + 1{increments} WHERE id = %s)",
                            [now, model, *tokens.values(), existing_id], inserts=False,
                            updates=existing_id or "")


def write_turn(*, conversation: ConversationPart, response: dict[str, Any], input_items: list[dict[str, Any]],
               output_items: list[dict[str, Any]] | None) -> None:
    """One statement: the conversation CTE, the response row, and its items (output items only
    when given: a turn written whole)."""
    columns, placeholders, response_params = _row(StoredResponse, response)
    response_id = response["id"]
    items_sql = _items_select("%s", Item.Kind.INPUT)
    items_params: list[Any] = [response_id, fast_json.dumps(input_items)]
    if output_items is not None:
        items_sql += " UNION ALL " + _items_select("%s", Item.Kind.OUTPUT)
        items_params += [response_id, fast_json.dumps(output_items)]
    sql = (f"WITH {conversation.sql}, response AS (INSERT INTO {_RESPONSES} ({columns}) VALUES ({placeholders})) "  # noqa: S608
           f"INSERT INTO {_ITEMS} ({_ITEM_COLUMNS}) {items_sql}")
    # The row writes django-prometheus's model mixin counts when the ORM saves them (before the write, as it does).
    if conversation.inserts:
        model_inserts.labels("conversation").inc()
    model_inserts.labels("stored_response").inc()
    group_commit.execute(sql, [*conversation.params, *response_params, *items_params], lock_key=conversation.updates)


def finish_turn(*, response_id: str, conversation_id: str, status: str, completed_at: datetime | None,
                interrupted: str, outcome: dict[str, Any], output_items: list[dict[str, Any]], now: datetime,
                tokens: dict[str, int]) -> None:
    """One statement: settle the row (a `cancelled` one keeps its status, completion time and
    reason; the outcome is written either way), add its output items and count its tokens into the
    conversation, the last two only when the row was still there."""
    kept = {"status": status, "completed_at": completed_at, "interrupted": interrupted}
    assignments = [f"{name} = CASE WHEN status = '{_CANCELLED}' THEN {name} ELSE %s END" for name in kept]
    assignments += [f"{name} = %s" for name in outcome]
    preparer = db_connection.for_preparing_values()
    params = [_RESPONSE_FIELDS[name].get_db_prep_save(value, preparer)
              for name, value in (*kept.items(), *outcome.items())]
    sql = (f"WITH settled AS (UPDATE {_RESPONSES} SET {', '.join(assignments)} WHERE id = %s RETURNING id), "  # noqa: S608
           f"items AS (INSERT INTO {_ITEMS} ({_ITEM_COLUMNS}) "
           f"{_items_select('settled.id', Item.Kind.OUTPUT, joined='settled')}) "
           f"UPDATE {_CONVERSATIONS} SET updated_at = %s, input_tokens = input_tokens + %s, "
           f"output_tokens = output_tokens + %s WHERE id = %s AND EXISTS (SELECT 1 FROM settled)")
    group_commit.execute(sql, [*params, response_id, fast_json.dumps(output_items), now, tokens["input_tokens"],
                               tokens["output_tokens"], conversation_id], lock_key=conversation_id)


# The anchor (the caller's own, not deleted) and, only when it is there, its chain's items as one
# JSON array: the recursive walk follows previous_response_id whatever those responses' state (a
# deleted one's items stay in the context of the responses that followed it). Each response's items
# are a lateral subquery, one index lookup per response: joined plainly, the planner, before
# autovacuum had analyzed a table that had just grown (a burst of turns), guessed ~150 items per
# response and read the chain's with a sequential scan of the whole table, 20 ms at 80,000 items
# against 0.5 ms. OFFSET 0 keeps it from flattening the subquery back into that join.
#
# Most chains never branch, and then the walk is not needed: a turn is written in its parent's
# conversation at its parent's depth + 1, so the chain of a response at depth D holds one response
# of its conversation at each depth 0..D. When the conversation holds no other response up to depth D
# (counted up to D + 2 at most, one range of the (conversation, depth) index), those are the chain,
# read by that range; only a conversation that branched below the anchor (or an API conversation,
# whose turns are all at depth 0) is walked. At depth 49 the walk took 0.55 ms of the read's 0.74;
# read by the range, 0.32 ms (issue 13: turn 50 of a chain against turn 2).
_READ_CHAIN_SQL = f"""
WITH RECURSIVE chain(id, previous_response_id, depth) AS (
    SELECT id, previous_response_id, depth FROM {_RESPONSES} WHERE id = %(id)s
    UNION ALL
    SELECT r.id, r.previous_response_id, r.depth FROM {_RESPONSES} r JOIN chain c ON r.id = c.previous_response_id
)
SELECT anchor.conversation_id, anchor.depth, anchor.status,
       CASE WHEN (SELECT count(*) FROM (
                      SELECT 1 FROM {_RESPONSES} r WHERE r.conversation_id = anchor.conversation_id
                      AND r.depth <= anchor.depth LIMIT anchor.depth + 2) up_to) = anchor.depth + 1
       THEN (SELECT COALESCE(json_agg(i.data ORDER BY m.depth, i.kind, i.position), '[]')::text
             FROM {_RESPONSES} m CROSS JOIN LATERAL (
                 SELECT data, kind, position FROM {_ITEMS} WHERE response_id = m.id OFFSET 0) i
             WHERE m.conversation_id = anchor.conversation_id AND m.depth <= anchor.depth)
       ELSE (SELECT COALESCE(json_agg(i.data ORDER BY c.depth, i.kind, i.position), '[]')::text
             FROM chain c CROSS JOIN LATERAL (
                 SELECT data, kind, position FROM {_ITEMS} WHERE response_id = c.id OFFSET 0) i)
       END
FROM {_RESPONSES} anchor WHERE anchor.id = %(id)s AND anchor.owner = %(owner)s AND anchor.deleted_at IS NULL
"""  # noqa: S608 - the table names are the models'; the values are parameters


def read_chain(response_id: str, owner: str) -> tuple[str, int, str, list[dict[str, Any]], int] | None:
    """One statement: the caller's own visible response `response_id` (its conversation id, depth
    and status) and the input and output items of every response in its chain, oldest first, with
    their JSON size; None when there is no such response."""
    with connection.cursor() as cursor:
        cursor.execute(_READ_CHAIN_SQL, {"id": response_id, "owner": owner})
        row = cursor.fetchone()
    if row is None:
        return None
    conversation_id, depth, status, items = row
    return conversation_id, depth, status, fast_json.loads(items), len(items)
