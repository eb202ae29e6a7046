"""Delete stored conversations older than a retention, and finish removing conversations deleted
through the Conversations API.

Nothing is deleted for age unless the operator says how old: `--older-than 30d`, or
`conversations.retention` in the config file. With neither, only conversations already deleted
through the API are removed (their clients asked for it). Run it from cron or a systemd timer.

Chains go a batch of whole conversations per transaction; a conversation of the Conversations API
is first hidden, then removed row batch by row batch (its items, then its turns, then itself), so
no transaction grows with a long history. Either way an interrupted run (Ctrl-C, a lost database)
leaves nothing half-deleted in sight, and the next run continues where it stopped. Progress goes
to stderr, the counts to stdout.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations_app.api_store import api_conversations
from conversations_app.store import store
from gateway_project.cli import Progress, raw_stream
from gateway_project.config import describe_duration, parse_duration


class Command(BaseCommand):
    help = ("Delete conversations (responses and items included) with no turn for --older-than (or the "
            "configured conversations.retention), and finish removing those deleted through the "
            "Conversations API. Without either, nothing is deleted for age. Batched and resumable: "
            "run it again after an interruption.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", metavar="AGE",
                            help="delete conversations with no turn for this long, e.g. 30d or 12h "
                                 "(default: conversations.retention; unset, none are deleted for age)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--batch-size", type=int, default=500, metavar="N",
                            help="rows (or chains) per transaction (default: 500)")

    def handle(self, *args: Any, older_than: str | None, dry_run: bool, batch_size: int, **options: Any) -> None:
        # SIGTERM (systemd, Kubernetes) stops it like Ctrl-C: the batch under way rolls back whole.
        main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
        previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            self._handle(older_than, dry_run, batch_size)
        except KeyboardInterrupt:
            self.stderr.write("interrupted: what was deleted so far is gone, nothing is half-deleted; "
                              "run purge_conversations again to continue")
            raise SystemExit(130) from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    def _handle(self, older_than: str | None, dry_run: bool, batch_size: int) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1")
        retention = settings.GATEWAY.conversations.retention
        try:
            idle = parse_duration(older_than) if older_than else retention
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        if idle is not None and idle <= 0:
            raise CommandError("--older-than: must be more than 0")
        verb = "would delete" if dry_run else "deleted"

        deleted = api_conversations.purge_deleted(batch_size=batch_size, dry_run=dry_run,
                                                  progress=self._lines("conversations deleted through the API"))
        self.stdout.write(f"{verb} {deleted} conversation(s) deleted through the API")
        if idle is None:
            self.stdout.write("no conversation deleted for age: pass --older-than (e.g. 30d) or set "
                              "conversations.retention in the config file")
            return
        source = f"--older-than {older_than}" if older_than else "conversations.retention"
        age = describe_duration(idle)
        self.stdout.write(f"deleting conversations with no turn for {age} ({source})" if not dry_run else
                          f"counting conversations with no turn for {age} ({source})")
        chains = self._purge_chains(idle, batch_size=batch_size, dry_run=dry_run)
        api = api_conversations.purge_idle(idle, batch_size=batch_size, dry_run=dry_run,
                                           progress=self._lines("idle API conversations"))
        self.stdout.write(f"{verb} {chains + api} conversation(s) idle for more than {age} "
                          f"({chains} chain(s), {api} API conversation(s))")

    def _purge_chains(self, idle: float, *, batch_size: int, dry_run: bool) -> int:
        if dry_run:
            return store.purge_idle(idle, batch_size=batch_size, dry_run=True)
        bar = Progress("chains", store.purge_idle(idle, dry_run=True), stream=raw_stream(self.stderr))
        try:
            return store.purge_idle(idle, batch_size=batch_size, progress=bar.update)
        finally:
            bar.finish()

    def _lines(self, label: str) -> Any:
        def line(text: str) -> None:
            self.stderr.write(f"{label}: {text} removed")
        return line


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
