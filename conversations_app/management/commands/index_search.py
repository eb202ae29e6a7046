"""Index every stored item still waiting for the admin's full-text search.

Gunicorn workers do this by themselves about every half second (conversations_app.search_index), so
this is for a gateway not running, or to catch up at once after migration 0009, which notes every
item stored before it as waiting. The admin finds waiting items either way, only more slowly.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from conversations_app import search_index


class Command(BaseCommand):
    help = ("Index the words of every stored item not yet in the admin's full-text search index "
            "(Postgres; gunicorn workers do this by themselves). Prints how many were indexed.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not search_index.available():
            self.stderr.write("The full-text search index is kept on Postgres only; this database is "
                              "searched by substring and needs no indexing.")
        try:
            indexed = search_index.index_pending()
        except DatabaseError as exc:
            raise CommandError(f"The database refused: {exc}") from None
        self.stdout.write(str(indexed))
