"""`manage.py list_api_keys [--owner acme] [--all] [--json]`

The gateway's API keys as a table (or JSON), newest first; active keys only unless --all. The keys
themselves are never shown (only their hash is stored): the prefix identifies each one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from identity_app.models import ApiKey

COLUMNS = ("id", "name", "owner", "prefix", "models", "limits", "created", "last used", "revoked")


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


class Command(BaseCommand):
    help = ("List the gateway's API keys (id, name, owner, prefix, models, limits, created, last used, revoked); "
            "active keys only unless --all. Times are UTC.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", help="Only this owner's keys.")
        parser.add_argument("--all", action="store_true", help="Include revoked keys.")
        parser.add_argument("--json", action="store_true", help="A JSON array instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        found = ApiKey.objects.order_by("-created_at", "-pk")
        if options["owner"] is not None:
            found = found.filter(owner=options["owner"])
        if not options["all"]:
            found = found.filter(revoked_at__isnull=True)
        records = list(found)
        if options["json"]:
            self.stdout.write(json.dumps([{
                "id": k.pk, "name": k.name, "owner": k.owner, "prefix": k.prefix, "models": k.allowed_models,
                "rpm": k.rpm, "tpm": k.tpm, "created": _when(k.created_at), "last_used": _when(k.last_used_at),
                "revoked": _when(k.revoked_at),
            } for k in records], indent=2))
            return
        rows = [(str(k.pk), k.name, k.owner, k.prefix, ",".join(k.allowed_models) or "all",
                 f"{k.rpm or 'global'} rpm / {k.tpm or 'global'} tpm", _short(k.created_at), _short(k.last_used_at),
                 _short(k.revoked_at)) for k in records]
        widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=False)]
        for line in (COLUMNS, *rows):
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        scope = "" if options["all"] else " (active; --all includes revoked)"
        self.stderr.write(f"{len(rows)} key(s){scope}")
