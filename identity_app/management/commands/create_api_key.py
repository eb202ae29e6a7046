"""`manage.py create_api_key --name ci --owner acme [--models a,b] [--rpm N] [--tpm N]`

Prints the key once, alone on stdout, so `KEY=$(manage.py create_api_key ...)` captures it: only
its hash is stored, so it cannot be shown again. Notes and warnings go to stderr.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from identity_app.keys import config_warnings, issue_key


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


class Command(BaseCommand):
    help = ("Create a gateway API key and print it once on stdout (only its SHA-256 is stored); "
            "notes and warnings go to stderr.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="What the key is for (shown in the admin).")
        parser.add_argument("--owner", required=True, help="Tenant label; responses are visible only to this owner.")
        parser.add_argument("--models", default="", help="Comma-separated model names or aliases this key may use "
                                                         "(default: all). Names the config does not serve are a "
                                                         "warning.")
        parser.add_argument("--rpm", type=_positive, help="Requests per minute for this key (default: global).")
        parser.add_argument("--tpm", type=_positive, help="Tokens per minute for this key (default: global).")

    def handle(self, *args: Any, **options: Any) -> None:
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        try:
            issued = issue_key(name=options["name"], owner=options["owner"], allowed_models=models,
                               rpm=options["rpm"], tpm=options["tpm"])
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        self.stderr.write(f"Created API key {issued.record.prefix}… (id {issued.record.pk}) for owner "
                          f"{issued.record.owner!r}. Store it now: it cannot be shown again.")
        has_limits = options["rpm"] is not None or options["tpm"] is not None
        for warning in config_warnings(models, has_limits=has_limits):
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        # The key alone on stdout, so scripts can capture it: KEY=$(manage.py create_api_key ...)
        self.stdout.write(issued.key)

