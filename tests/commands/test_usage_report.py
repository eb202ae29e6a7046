"""manage.py usage_report: the usage rollup grouped, filtered and totalled, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conversations_app.models import UsageDay
from identity_app.models import ApiKey


def _report(*args: str) -> str:
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def usage(db: None) -> ApiKey:
    key = ApiKey.objects.create(name="ci", prefix="gwk_ci", key_hash="0" * 64, owner="acme")
    rows = [
        (date(2026, 11, 28), "gpt-4o-mini", "openai", "acme", f"key:{key.pk}", 10, 1, 1000, 100, 500, "0.0012"),
        (date(2026, 11, 29), "gpt-4o-mini", "openai", "acme", f"key:{key.pk}", 5, 0, 400, 0, 200, "0.0005"),
        (date(2026, 11, 29), "claude", "anthropic", "globex", "oidc:bob", 2, 2, 0, 0, 0, "0"),
        (date(2026, 11, 30), "claude", "anthropic", "globex", "oidc:bob", 3, 0, 3000, 0, 900, "0.02"),
    ]
    for day, model, provider, owner, subject, requests, errors, inp, cached, out, cost in rows:
        UsageDay.objects.create(day=day, model=model, provider=provider, owner=owner, subject=subject,
                                requests=requests, errors=errors, input_tokens=inp, cached_tokens=cached,
                                output_tokens=out, cost_usd=Decimal(cost))
    return key


def test_the_default_table_is_per_day_and_model_with_a_total(usage: ApiKey):
    lines = _report().splitlines()
    assert lines[0].split() == ["day", "model", "requests", "errors", "input", "cached", "output", "cost", "(USD)"]
    assert lines[2].split() == ["2026-11-28", "gpt-4o-mini", "10", "1", "1,000", "100", "500", "0.0012"]
    assert lines[3].split() == ["2026-11-29", "claude", "2", "2", "0", "0", "0", "0.0000"]
    assert lines[-1].split() == ["total", "20", "3", "4,400", "100", "1,600", "0.0217"]
    assert len(lines) == 2 + 4 + 1


def test_grouped_by_owner_and_key_with_the_key_name(usage: ApiKey):
    lines = _report("--by", "owner,key").splitlines()
    assert lines[2].split()[:4] == ["acme", f"key:{usage.pk}", "(ci)", "15"]
    assert lines[3].split()[:3] == ["globex", "oidc:bob", "5"]


def test_filters_and_date_range(usage: ApiKey):
    out = _report("--by", "model", "--since", "2026-11-29", "--until", "2026-11-29", "--format", "json")
    report = json.loads(out)
    assert report["by"] == ["model"]
    assert [(r["model"], r["requests"]) for r in report["rows"]] == [("claude", 2), ("gpt-4o-mini", 5)]
    assert report["total"]["requests"] == 7 and report["total"]["cost_usd"] == "0.00050000"
    only = json.loads(_report("--by", "day", "--owner", "globex", "--model", "claude", "--format", "json"))
    assert [(r["day"], r["errors"]) for r in only["rows"]] == [("2026-11-29", 2), ("2026-11-30", 0)]
    by_key = json.loads(_report("--by", "", "--key", "oidc:bob", "--format", "json"))
    assert by_key["rows"] == [] and by_key["total"]["input_tokens"] == 3000


def test_csv(usage: ApiKey):
    rows = list(csv.reader(StringIO(_report("--by", "provider", "--format", "csv"))))
    assert rows[0] == ["provider", "requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "cost_usd"]
    assert rows[1][:2] == ["anthropic", "5"] and rows[2][:2] == ["openai", "15"]
    assert rows[-1][:2] == ["total", "20"]


def test_an_empty_rollup_is_a_zero_total(db: None):
    assert _report().splitlines()[-1].split() == ["total", "0", "0", "0", "0", "0", "0.0000"]


def test_bad_flags_are_command_errors(db: None):
    with pytest.raises(CommandError, match="--by: unknown column 'team'"):
        _report("--by", "day,team")
    with pytest.raises(CommandError, match="--since: expected a date"):
        _report("--since", "last tuesday")
