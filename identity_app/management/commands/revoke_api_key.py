"""`manage.py revoke_api_key <id or prefix> [...]`

Revokes keys the way the admin does (identity_app.keys.revoke): every worker and instance refuses
them from their next request. Idempotent: an already revoked key is reported and left as it is.
Exits non-zero when a reference matches no key (after revoking the others).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from identity_app.keys import find_key, revoke


class Command(BaseCommand):
    help = ("Revoke API keys by id or prefix (gwk_1a2b3c4d); every worker refuses them at once. Revoking a revoked "
            "key does nothing; an unknown key exits non-zero.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="+", metavar="KEY", help="The key's id or prefix (see list_api_keys).")

    def handle(self, *args: Any, **options: Any) -> None:
        unknown = []
        for reference in options["keys"]:
            record = find_key(reference)
            if record is None:
                unknown.append(reference)
                continue
            described = f"key {record.pk} ({record.name}, {record.prefix}, owner {record.owner!r})"
            if revoke(record):
                self.stdout.write(f"Revoked {described}.")
            else:
                when = record.revoked_at.isoformat() if record.revoked_at else "earlier"
                self.stdout.write(f"Already revoked: {described}, at {when}; nothing done.")
        if unknown:
            raise CommandError(f"no API key with id or prefix {', '.join(map(repr, unknown))}")
