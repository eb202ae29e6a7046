"""The usage table in the terminal: requests, errors, tokens and cost from the usage rollup
(`UsageDay`, kept as turns end, so this never scans the responses), grouped by any of day, model,
provider, owner and key, with a total.

A gunicorn worker writes its counts every 10 s and at exit (conversations_app.usage), so the last
few seconds of traffic may not be in the report yet.
"""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Sum

from conversations_app.models import UsageDay
from gateway_project.cli import parse_day, render_table

# --by name -> UsageDay field. "key" is the caller: an API key (`key:12`), an OIDC subject, or '' (auth off).
GROUPS = {"day": "day", "model": "model", "provider": "provider", "owner": "owner", "key": "subject"}
COUNTS = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "cost_usd")


class Command(BaseCommand):
    help = ("Usage and cost from the usage rollup: requests, errors, tokens and USD, grouped by day, model, "
            "provider, owner and/or key, with a total row.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--by", default="day,model", metavar="COLUMNS",
                            help=f"comma-separated, any of {', '.join(GROUPS)} (default: day,model); "
                                 "'' for the total only")
        parser.add_argument("--since", metavar="DAY", help="first day (2026-11-01, or an age: 7d); default: all")
        parser.add_argument("--until", metavar="DAY", help="last day, included (2026-11-30 or an age)")
        parser.add_argument("--owner", help="only this owner")
        parser.add_argument("--model", help="only this model")
        parser.add_argument("--key", help="only this caller (key:12, an OIDC subject)")
        parser.add_argument("--format", choices=("table", "csv", "json"), default="table")

    def handle(self, *args: Any, by: str, since: str | None, until: str | None, owner: str | None,
               model: str | None, key: str | None, format: str, **options: Any) -> None:
        groups = [name.strip() for name in by.split(",") if name.strip()]
        if unknown := [name for name in groups if name not in GROUPS]:
            raise CommandError(f"--by: unknown column {unknown[0]!r} (expected any of: {', '.join(GROUPS)})")
        rows = UsageDay.objects.all()
        try:
            first = parse_day(since, flag="--since") if since else None
            last = parse_day(until, flag="--until") if until else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if first:
            rows = rows.filter(day__gte=first)
        if last:
            rows = rows.filter(day__lte=last)
        for field, value in (("owner", owner), ("model", model), ("subject", key)):
            if value is not None:
                rows = rows.filter(**{field: value})
        fields = [GROUPS[name] for name in groups]
        sums = {name: Sum(name) for name in COUNTS}
        grouped = [{**row, **{n: row[n] or 0 for n in COUNTS}}
                   for row in rows.values(*fields).annotate(**sums).order_by(*fields)] if fields else []
        total = {n: v or 0 for n, v in rows.aggregate(**sums).items()}
        names = self._key_names([row["subject"] for row in grouped]) if "key" in groups else {}
        for row in grouped:
            if "subject" in row:
                row["key"] = row.pop("subject")
        {"table": self._table, "csv": self._csv, "json": self._json}[format](groups, grouped, total, names)

    @staticmethod
    def _key_names(subjects: list[str]) -> dict[str, str]:
        from identity_app.models import ApiKey

        ids = {int(s[4:]) for s in subjects if s.startswith("key:") and s[4:].isdigit()}
        return {f"key:{pk}": name for pk, name in ApiKey.objects.filter(pk__in=ids).values_list("pk", "name")}

    def _table(self, groups: list[str], rows: list[dict[str, Any]], total: dict[str, Any],
               names: dict[str, str]) -> None:
        headers = [*groups, "requests", "errors", "input", "cached", "output", "cost (USD)"]

        def cells(row: dict[str, Any], labels: list[Any]) -> list[Any]:
            return [*labels, f"{row['requests']:,}", f"{row['errors']:,}", f"{row['input_tokens']:,}",
                    f"{row['cached_tokens']:,}", f"{row['output_tokens']:,}", f"{Decimal(row['cost_usd']):,.4f}"]

        def label(name: str, value: Any) -> str:
            if name == "key":
                return f"{value} ({names[value]})" if value in names else (value or "-")
            return str(value) if value not in ("", None) else "-"

        body = [cells(row, [label(g, row[g]) for g in groups]) for row in rows]
        body.append(cells(total, ["total", *[""] * (len(groups) - 1)] if groups else []))
        counts = range(len(groups), len(headers))
        self.stdout.write(render_table(headers, body, right=counts))

    def _csv(self, groups: list[str], rows: list[dict[str, Any]], total: dict[str, Any],
             names: dict[str, str]) -> None:
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow([*groups, *COUNTS])
        for row in rows:
            writer.writerow([*(row[g] for g in groups), *(row[n] for n in COUNTS)])
        writer.writerow(["total", *[""] * (len(groups) - 1), *(total[n] for n in COUNTS)] if groups
                        else [total[n] for n in COUNTS])

    def _json(self, groups: list[str], rows: list[dict[str, Any]], total: dict[str, Any],
              names: dict[str, str]) -> None:
        def plain(row: dict[str, Any]) -> dict[str, Any]:
            return {k: (v.isoformat() if isinstance(v, date) else str(v) if isinstance(v, Decimal) else v)
                    for k, v in row.items()}

        out = {"by": groups, "rows": [plain(row) for row in rows], "total": plain(total),
               "key_names": names}
        self.stdout.write(json.dumps(out, indent=2))
