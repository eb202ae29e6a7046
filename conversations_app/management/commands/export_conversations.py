"""Export stored conversations as JSON lines, streamed (never the whole store in memory), to
stdout or a file. The shape: docs/api.md#exporting-conversations (conversations_app.export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations_app.export import Selection, export
from gateway_project.cli import Progress, parse_when, raw_stream


class Command(BaseCommand):
    help = ("Export stored conversations as JSON lines: one object per conversation (its turns and items in "
            "order) or per turn; streamed, to stdout or --output.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("jsonl",), default="jsonl", help="jsonl (the only one so far)")
        parser.add_argument("--output", "-o", metavar="PATH", help="write here instead of stdout")
        parser.add_argument("--per", choices=("conversation", "turn"), default="conversation",
                            help="one line per conversation (default) or per turn")
        parser.add_argument("--owner", help="only this owner's conversations")
        parser.add_argument("--model", help="only conversations with a turn of this model")
        parser.add_argument("--since", metavar="WHEN",
                            help="only conversations with a turn at or after (2026-11-01, 2026-11-01T12:00, or 7d)")
        parser.add_argument("--until", metavar="WHEN", help="only conversations begun at or before")
        parser.add_argument("--conversation", action="append", default=[], metavar="ID",
                            help="only this conversation (repeatable)")
        parser.add_argument("--include-deleted", action="store_true",
                            help="also conversations deleted through the API and not yet purged")

    def handle(self, *args: Any, output: str | None, per: str, owner: str | None, model: str | None,
               since: str | None, until: str | None, conversation: list[str], include_deleted: bool,
               **options: Any) -> None:
        try:
            selection = Selection(owner=owner, model=model, conversation_ids=conversation,
                                  since=parse_when(since, flag="--since") if since else None,
                                  until=parse_when(until, flag="--until") if until else None,
                                  include_deleted=include_deleted)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stderr = raw_stream(self.stderr)
        # Progress only where it cannot mix with the data: into a file, or on a terminal's stderr.
        show = output is not None or stderr.isatty()
        bar = Progress("exported", selection.conversations().count() if show else None, stream=stderr)
        target: IO[str] = open(output, "w", encoding="utf-8") if output else raw_stream(self.stdout)  # noqa: SIM115 - closed below
        conversations = lines = 0
        last = None
        try:
            for line in export(selection, per=per):
                target.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                lines += 1
                current = line["id"] if per == "conversation" else line["conversation_id"]
                if current != last:
                    conversations, last = conversations + 1, current
                    if show:
                        bar.update(conversations)
        finally:
            if output:
                target.close()
            else:
                target.flush()
            bar.finish()
        where = f" to {Path(output)}" if output else ""
        self.stderr.write(f"exported {conversations} conversation(s), {lines} line(s){where}")
