"""A GIN index on to_tsvector('english', data) over the items' JSON (its string values): the
admin's search over message text (conversations_app.admin_views.ItemText uses the same
expression, so Postgres answers from the index). Built CONCURRENTLY, so a deployment with many
items keeps writing turns while it builds. Postgres only; SQLite searches with a substring match.
The store's write path is unchanged (Postgres keeps the index)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

INDEX = "conversations_app_item_text_search"


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON conversations_app_item "
            "USING gin (to_tsvector('english'::regconfig, data))")


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("conversations_app", "0006_usage_rollup")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
