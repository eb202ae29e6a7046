"""The key commands: create_api_key's warnings, list_api_keys, revoke_api_key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from gateway_project.config import parse_config
from identity_app.keys import find_active_key, issue_key
from identity_app.models import ApiKey
from tests.e2e.gunicorn import ROOT

pytestmark = pytest.mark.django_db


def use_config(settings: Any, *, auth: bool = True, limits: bool = True) -> None:
    settings.GATEWAY = parse_config({
        "auth": {"enabled": auth},
        "rate_limit": {"enabled": limits},
        "providers": {"demo": {"type": "demo"}},
        "models": [{"name": "demo", "provider": "demo", "aliases": ["demo-latest"]}],
    })


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """manage.py in a process of its own, on this test's database (its tables; not this test's rows,
    which are in an open transaction)."""
    db = connection.settings_dict
    env = {**os.environ, "GATEWAY_CONFIG": str(ROOT / "tests" / "config.test.yaml"),
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["create_api_key", "list_api_keys", "revoke_api_key"])
def test_each_command_explains_itself(command: str) -> None:
    done = manage(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: manage.py " + command in done.stdout
    assert {"create_api_key": "--models", "list_api_keys": "--json", "revoke_api_key": "KEY"}[command] in done.stdout


def test_create_prints_only_the_key_on_stdout_and_warnings_on_stderr(settings: Any) -> None:
    use_config(settings, auth=False, limits=False)
    out, err = run("create_api_key", "--name", "ci", "--owner", "acme", "--models", "demo-latest,gpt-nope",
                   "--rpm", "5")
    key = out.strip()
    assert out == key + "\n" and find_active_key(key) is not None
    assert key not in err
    assert "warning: Not a configured model: gpt-nope (configured: demo); the key cannot use it" in err
    assert "warning: Auth is off in the config (auth.enabled: false)" in err
    assert "warning: Rate limits are off in the config (rate_limit.enabled: false)" in err
    assert ApiKey.objects.get().allowed_models == ["demo-latest", "gpt-nope"]


def test_create_says_nothing_more_when_all_is_in_order(settings: Any) -> None:
    use_config(settings)
    out, err = run("create_api_key", "--name", "ci", "--owner", "acme", "--models", "demo", "--rpm", "5")
    assert out.startswith("gwk_") and "warning" not in err and "Created API key" in err


@pytest.fixture
def three_keys() -> list[ApiKey]:
    first = issue_key(name="ci", owner="acme", allowed_models=["demo"], rpm=60).record
    second = issue_key(name="batch", owner="globex", tpm=1000).record
    gone = issue_key(name="old", owner="acme").record
    ApiKey.objects.filter(pk=gone.pk).update(revoked_at=timezone.now(),
                                             last_used_at=timezone.now() - timedelta(days=1))
    return [first, second, gone]


def test_list_shows_the_active_keys_as_a_table(three_keys: list[ApiKey]) -> None:
    first, second, _ = three_keys
    out, err = run("list_api_keys")
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "owner", "prefix", "models", "limits", "created", "last", "used",
                                "revoked"]
    assert len(lines) == 3 and "2 key(s)" in err
    assert lines[1].split()[:8] == [str(second.pk), "batch", "globex", second.prefix, "all", "global", "rpm", "/"]
    assert lines[2].split()[:5] == [str(first.pk), "ci", "acme", first.prefix, "demo"]
    assert "60 rpm / global tpm" in lines[2]
    assert "gwk_" not in out.replace(first.prefix, "").replace(second.prefix, "")  # prefixes only


def test_list_filters_by_owner_and_includes_revoked_keys_on_request(three_keys: list[ApiKey]) -> None:
    first, _, gone = three_keys
    out, _ = run("list_api_keys", "--owner", "acme")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(first.pk)]
    out, _ = run("list_api_keys", "--owner", "acme", "--all")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(gone.pk), str(first.pk)]


def test_list_as_json(three_keys: list[ApiKey]) -> None:
    first, second, gone = three_keys
    rows = json.loads(run("list_api_keys", "--all", "--json")[0])
    assert [row["id"] for row in rows] == [gone.pk, second.pk, first.pk]
    assert rows[2] == {"id": first.pk, "name": "ci", "owner": "acme", "prefix": first.prefix, "models": ["demo"],
                       "rpm": 60, "tpm": None, "created": first.created_at.isoformat(), "last_used": None,
                       "revoked": None}
    assert rows[0]["revoked"] is not None and rows[0]["last_used"] is not None
    assert json.loads(run("list_api_keys", "--owner", "nobody", "--json")[0]) == []


def test_revoke_by_id_or_prefix_and_again(three_keys: list[ApiKey]) -> None:
    first, second, _ = three_keys
    out, _ = run("revoke_api_key", str(first.pk))
    assert out == f"Revoked key {first.pk} (ci, {first.prefix}, owner 'acme').\n"
    out, _ = run("revoke_api_key", second.prefix)
    assert out.startswith(f"Revoked key {second.pk} (batch")
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 0

    when = ApiKey.objects.get(pk=first.pk).revoked_at
    out, _ = run("revoke_api_key", str(first.pk))
    assert out.startswith(f"Already revoked: key {first.pk} (ci") and "nothing done" in out
    assert ApiKey.objects.get(pk=first.pk).revoked_at == when  # idempotent: the first time stays


def test_the_full_key_works_too_but_a_mistyped_one_finds_nothing() -> None:
    issued = issue_key(name="ci", owner="acme")
    typo = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    with pytest.raises(CommandError, match="no API key"):
        run("revoke_api_key", typo)  # same prefix, but not this key
    assert find_active_key(issued.key) is not None
    run("revoke_api_key", issued.key)
    assert find_active_key(issued.key) is None


def test_an_unknown_key_is_an_error_after_the_known_ones_are_revoked(three_keys: list[ApiKey]) -> None:
    first = three_keys[0]
    with pytest.raises(CommandError, match=r"no API key with id or prefix '999999', 'gwk_00000000', 'nonsense'"):
        run("revoke_api_key", "999999", str(first.pk), "gwk_00000000", "nonsense")
    assert ApiKey.objects.get(pk=first.pk).revoked_at is not None


def test_an_unknown_key_exits_non_zero_from_the_shell() -> None:
    done = manage("revoke_api_key", "gwk_ffffffff")
    assert done.returncode == 1, done.stderr
    assert "no API key with id or prefix 'gwk_ffffffff'" in done.stderr
