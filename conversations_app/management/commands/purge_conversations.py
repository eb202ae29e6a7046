"""Delete conversations idle for longer than `conversations.ttl` (or --older-than), and finish
removing conversations deleted through the Conversations API.

Run it from cron or a systemd timer; nothing expires conversations on its own, so a chain stays
usable until an operator decides otherwise. A conversation of the Conversations API is removed
row batch by row batch (its items, then its turns, then itself), each batch a short transaction,
with a progress line per batch: one that holds a long history never becomes one huge transaction.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations_app.api_store import api_conversations
from conversations_app.store import store
from gateway_project.config import parse_duration


class Command(BaseCommand):
    help = ("Delete conversations (responses and items included) with no turn within the TTL, and those "
            "deleted through the Conversations API.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", help="idle time, e.g. 30d or 12h (default: conversations.ttl)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, older_than: str | None, dry_run: bool, batch_size: int, **options: Any) -> None:
        try:
            idle = parse_duration(older_than) if older_than else settings.GATEWAY.conversations.ttl
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1")
        verb = "would delete" if dry_run else "deleted"
        deleted = api_conversations.purge_deleted(batch_size=batch_size, progress=self._progress, dry_run=dry_run)
        self.stdout.write(f"{verb} {deleted} conversation(s) deleted through the API")
        count = store.purge_idle(idle, batch_size=batch_size, dry_run=dry_run)
        count += api_conversations.purge_idle(idle, batch_size=batch_size, progress=self._progress, dry_run=dry_run)
        self.stdout.write(f"{verb} {count} conversation(s) idle for more than {idle:g}s")

    def _progress(self, line: str) -> None:
        self.stdout.write(f"  {line} removed")
