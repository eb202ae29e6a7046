"""The admin's full-text index, out of the turn's own statement.

Migration 0007 indexed `to_tsvector('english', data)` of every item, which Postgres computes inside
the statement that stores a turn, before the commit the client's answer waits for: about 1 µs per
word of each item (benchmarks/turn_write.py: +0.1 ms on a 10-word answer's write, +0.3 ms on a
300-word one, +1.0 ms on 1,500 words; 15-54 % of the write). Now:

- a trigger on the item table notes each new item in `conversations_app_searchpending` (one small
  index entry per item, whatever inserts it: a turn, the Conversations API, the admin);
- conversations_app.search_index computes the words of pending items in batches, in each gunicorn
  worker's maintenance loop, into `conversations_app_itemsearch`, GIN-indexed;
- the admin's search reads that index, plus the words of the few items still pending, on the fly:
  what it finds is the same as before, the moment a turn is stored.

Postgres only; elsewhere (SQLite) the two tables are made and stay empty, and the admin matches
substrings as before. Existing items are all noted pending here (in the same transaction as the
trigger, so none is missed) and indexed by the workers batch by batch after the deploy; until then
the admin's search reads their words on the fly (slower, the same results). The old index is
dropped CONCURRENTLY, so writes go on meanwhile.
"""

from __future__ import annotations

from typing import Any

import django.contrib.postgres.search
import django.db.models.deletion
from django.db import migrations, models, transaction

ITEMS, SEARCH, PENDING = "conversations_app_item", "conversations_app_itemsearch", "conversations_app_searchpending"
OLD_INDEX = "conversations_app_item_text_search"
FUNCTION = "conversations_app_item_search_pending"

FORWARD = [
    # Postgres's own cascade: every deletion of an item takes its words.
    f"ALTER TABLE {SEARCH} ADD CONSTRAINT {SEARCH}_item_fk FOREIGN KEY (item_id) "
    f"REFERENCES {ITEMS} (id) ON DELETE CASCADE",
    f"CREATE INDEX {SEARCH}_document ON {SEARCH} USING gin (document)",
    # One call per statement (a transition table), not per row: a turn's items are one INSERT.
    f"""CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {PENDING} (item_id) SELECT id FROM new_items;
    RETURN NULL;
END $$""",  # noqa: S608 - constant names
    f"CREATE TRIGGER {FUNCTION} AFTER INSERT ON {ITEMS} REFERENCING NEW TABLE AS new_items "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()",
    f"INSERT INTO {PENDING} (item_id) SELECT id FROM {ITEMS}",  # noqa: S608 - constant names
]

DROP_OLD_INDEX = f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEX}"

BACKWARD = [
    f"DROP TRIGGER IF EXISTS {FUNCTION} ON {ITEMS}",
    f"DROP FUNCTION IF EXISTS {FUNCTION}()",
]
CREATE_OLD_INDEX = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD_INDEX} ON {ITEMS} "
                    "USING gin (to_tsvector('english'::regconfig, data))")


def _apply(schema_editor: Any, together: list[str], concurrently: str) -> None:
    """`together` in one transaction (the trigger and the items noted pending: none slips between),
    then the index statement, which cannot run inside one. Postgres only."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with transaction.atomic(using=schema_editor.connection.alias):
        for statement in together:
            schema_editor.execute(statement)
    schema_editor.execute(concurrently)


def forward(apps: Any, schema_editor: Any) -> None:
    _apply(schema_editor, FORWARD, DROP_OLD_INDEX)


def backward(apps: Any, schema_editor: Any) -> None:
    _apply(schema_editor, BACKWARD, CREATE_OLD_INDEX)


def _item_key() -> models.OneToOneField[Any, Any]:
    """Both tables are keyed by the item, with no constraint of Django's (see FORWARD)."""
    return models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                                primary_key=True, related_name="+", serialize=False, to="conversations_app.item")


class Migration(migrations.Migration):
    # CREATE and DROP INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("conversations_app", "0008_fewer_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="ItemSearch",
            fields=[
                ("item", _item_key()),
                ("document", django.contrib.postgres.search.SearchVectorField()),
            ],
        ),
        migrations.CreateModel(
            name="SearchPending",
            fields=[
                ("item", _item_key()),
            ],
        ),
        migrations.RunPython(forward, backward, elidable=False),
    ]
