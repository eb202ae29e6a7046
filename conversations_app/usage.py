"""The usage rollup (`UsageDay`): requests, errors, tokens and cost per day, model, provider, owner
and caller, kept as turns end so that usage pages and reports never scan the responses.

Every turn is counted, stored or not, once, when it ends. Counting a `store: false` turn must not
cost it a database write, so each worker process adds turns up in memory and writes the sums with
one upsert per row every few seconds (its maintenance loop, responses_app.worker_lifecycle) and
when it exits; outside a gunicorn worker (tests, `manage.py`), every turn is written at once. A
worker killed outright loses at most the last few seconds of counts, never a turn itself.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from conversations_app.models import UsageDay

logger = logging.getLogger(__name__)

Key = tuple[date, str, str, str, str]  # day, model, provider, owner, subject


@dataclass
class Sums:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


class UsageRollup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: defaultdict[Key, Sums] = defaultdict(Sums)
        # Set by the worker's maintenance loop, which then writes the sums every few seconds.
        self.batched = False

    def record(self, *, model: str, provider: str, owner: str, subject: str, failed: bool,
               usage: dict[str, int] | None, cost_usd: float | None) -> None:
        usage = usage or {}
        key = (timezone.localdate(), model, provider, owner, subject)
        with self._lock:
            sums = self._pending[key]
            sums.requests += 1
            sums.errors += int(failed)
            sums.input_tokens += usage.get("input_tokens", 0)
            sums.cached_tokens += usage.get("cached_tokens", 0)
            sums.output_tokens += usage.get("output_tokens", 0)
            sums.cost_usd += Decimal(str(cost_usd or 0))
        if not self.batched:
            self.flush()

    def flush(self) -> int:
        """Write what was added up since the last flush; rows written. On a database error the sums
        are kept for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Sums)
        if not pending:
            return 0
        try:
            with transaction.atomic():
                for key, sums in pending.items():
                    _upsert(key, sums)
        except DatabaseError:
            logger.warning("could not write the usage rollup; it is kept for the next flush", exc_info=True)
            with self._lock:
                for key, sums in pending.items():
                    _add(self._pending[key], sums)
            return 0
        return len(pending)


def _add(into: Sums, more: Sums) -> None:
    into.requests += more.requests
    into.errors += more.errors
    into.input_tokens += more.input_tokens
    into.cached_tokens += more.cached_tokens
    into.output_tokens += more.output_tokens
    into.cost_usd += more.cost_usd


_COUNTS = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "cost_usd")


def _upsert(key: Key, sums: Sums) -> None:
    """Add to the row, creating it: one INSERT ... ON CONFLICT DO UPDATE (SQLite has it too)."""
    table = UsageDay._meta.db_table
    values: list[Any] = [*key, *(getattr(sums, name) for name in _COUNTS)]
    columns = ("day", "model", "provider", "owner", "subject", *_COUNTS)
    increments = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in _COUNTS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "  # noqa: S608 - constant names
            f"ON CONFLICT (day, model, provider, owner, subject) DO UPDATE SET {increments}", values)


rollup = UsageRollup()
