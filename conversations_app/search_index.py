"""The admin's full-text search over stored items, kept off the turn's write (migration 0009).

A turn's statement only inserts its items; a trigger notes each new item as pending. Here the
words of pending items (`to_tsvector('english', data)`, about 1 µs per word in Postgres) are
computed in batches into the GIN-indexed `ItemSearch`, by each gunicorn worker's maintenance loop
(responses_app.worker_lifecycle) about every second, or by `manage.py index_search`.

Batches are safe to run anywhere at once: each takes its pending rows with FOR UPDATE SKIP LOCKED,
and moves them (pending row deleted, words inserted) in one statement, so an item is indexed
exactly once and a batch that fails leaves its items pending for the next. An item deleted while
pending only loses its pending row.

`matching_ids` is what the admin's search reads: the index, and the few items not in it yet with
their words computed on the fly, so an item is found the moment its turn is stored. Postgres only.
"""

from __future__ import annotations

from django.db import connection
from django.db.models.expressions import RawSQL

from conversations_app.models import Item, ItemSearch, SearchPending

BATCH_SIZE = 500
# A worker's loop stops after this many full batches and goes on at its next tick (every half
# second): up to 2,000 items a second per worker, about twice what one worker stores at its busiest
# (two items a turn). A backlog (the first runs after migration 0009, which notes every existing
# item) then drains at that pace instead of taking all of Postgres from every worker at once;
# `manage.py index_search` drains it as fast as Postgres goes.
MAX_BATCHES_PER_RUN = 2

_ITEMS = Item._meta.db_table
_SEARCH = ItemSearch._meta.db_table
_PENDING = SearchPending._meta.db_table
_WORDS = "to_tsvector('english'::regconfig, {data})"

_INDEX_BATCH_SQL = f"""
WITH taken AS (
    DELETE FROM {_PENDING} WHERE item_id IN (
        SELECT item_id FROM {_PENDING} ORDER BY item_id LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING item_id
), indexed AS (
    INSERT INTO {_SEARCH} (item_id, document)
    SELECT i.id, {_WORDS.format(data="i.data")} FROM taken JOIN {_ITEMS} i ON i.id = taken.item_id
    ON CONFLICT (item_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM indexed)
"""  # noqa: S608 - the table names are the models'; the batch size is a parameter

# What websearch_to_tsquery makes of the admin's search box; SearchQuery(search_type="websearch").
_MATCHING_SQL = f"""
SELECT item_id FROM {_SEARCH} WHERE document @@ websearch_to_tsquery('english'::regconfig, %s)
UNION ALL
SELECT i.id FROM {_PENDING} p JOIN {_ITEMS} i ON i.id = p.item_id
WHERE {_WORDS.format(data="i.data")} @@ websearch_to_tsquery('english'::regconfig, %s)
"""  # noqa: S608 - the table names are the models'; the term is a parameter


def available() -> bool:
    return connection.vendor == "postgresql"


def index_batch(batch_size: int = BATCH_SIZE) -> tuple[int, int]:
    """Index up to `batch_size` pending items, in one statement: (pending rows taken, items
    indexed). Fewer indexed than taken: items deleted while pending. A full batch taken: more may
    be waiting."""
    with connection.cursor() as cursor:
        cursor.execute(_INDEX_BATCH_SQL, [batch_size])
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def index_pending(*, max_batches: int | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Index pending items, batch after batch, until none are left (or `max_batches` ran); returns
    how many were indexed. Does nothing on databases other than Postgres."""
    if not available():
        return 0
    total = batches = 0
    while max_batches is None or batches < max_batches:
        taken, indexed = index_batch(batch_size)
        total += indexed
        batches += 1
        if taken < batch_size:
            break
    return total


def matching_ids(term: str) -> RawSQL:
    """The ids of items whose words match the admin's search `term` (websearch syntax), for
    `pk__in`. Postgres only."""
    return RawSQL(_MATCHING_SQL, [term, term])  # noqa: S611 - constant SQL, the term is a parameter
