"""`manage.py chat`: a terminal chat against a running gateway (gateway_project.chat_client)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from gateway_project import chat_client


class Command(BaseCommand):
    help = ("Chat with a running gateway from the terminal: streamed answers, /model NAME to switch, /new to "
            "start over; turns chained with previous_response_id, or a conversation with --conversation.")
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's attribute, never mutated: a client, no checks

    def add_arguments(self, parser: CommandParser) -> None:
        chat_client.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        names = ("url", "api_key", "model", "conversation", "instructions", "stream", "timeout")
        code = chat_client.main(argparse.Namespace(**{name: options[name] for name in names}))
        if code:
            raise SystemExit(code)
