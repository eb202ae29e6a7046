"""The usage of one API key, read from the rollup (conversations_app.models.UsageDay, subject
`key:<id>`), never from the stored responses: one grouped query whatever the traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from conversations_app.models import UsageDay

USAGE_DAYS = 30


def key_subject(key_id: int) -> str:
    """What the rate limiter and the rollup call a key's caller (identity_app.identity.Identity)."""
    return f"key:{key_id}"


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class KeyUsage:
    since: date
    rows: list[ModelUsage] = field(default_factory=list)

    @property
    def total(self) -> ModelUsage:
        """The sum of the rows shown, so the total always agrees with them."""
        return ModelUsage("all models", sum(r.requests for r in self.rows), sum(r.errors for r in self.rows),
                          sum(r.input_tokens for r in self.rows), sum(r.output_tokens for r in self.rows),
                          sum((r.cost_usd for r in self.rows), Decimal(0)))


def usage_of_key(key_id: int, days: int = USAGE_DAYS) -> KeyUsage:
    """Per model, over the last `days` days including today (the rollup's days are local dates)."""
    since = timezone.localdate() - timedelta(days=days - 1)
    grouped = (UsageDay.objects.filter(subject=key_subject(key_id), day__gte=since)
               .values("model").order_by("model")
               .annotate(n=Sum("requests"), e=Sum("errors"), i=Sum("input_tokens"), o=Sum("output_tokens"),
                         c=Sum("cost_usd")))
    return KeyUsage(since, [ModelUsage(g["model"], g["n"], g["e"], g["i"], g["o"], g["c"]) for g in grouped])
