"""Gateway API keys: issued once, stored as a hash, found by hash, revoked at once."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from identity_app.keys import find_active_key, issue_key, revoke
from identity_app.models import ApiKey

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "--name", "ci", "--owner", "acme", "--models", "demo, gpt-test",
                 "--rpm", "30", "--tpm", "9000", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert key.startswith("gwk_") and len(key) > 40
    record = ApiKey.objects.get()
    assert record.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(record.prefix) and record.prefix in err.getvalue()
    assert key not in err.getvalue()
    assert (record.name, record.owner, record.allowed_models, record.rpm, record.tpm) == (
        "ci", "acme", ["demo", "gpt-test"], 30, 9000)
    # Nothing in the row is the key itself.
    assert all(key not in str(value) for value in ApiKey.objects.values().get().values())


def test_an_owner_cannot_pose_as_an_oidc_identity():
    with pytest.raises(CommandError, match="owner"):
        call_command("create_api_key", "--name", "x", "--owner", "oidc:alice", stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.exists()


def test_lookup_finds_the_key_and_nothing_else():
    issued = issue_key(name="a", owner="acme")
    found = find_active_key(issued.key)
    assert found is not None and found.pk == issued.record.pk
    assert find_active_key(issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")) is None
    assert find_active_key(issued.record.prefix) is None
    assert find_active_key("sk-not-a-gateway-key") is None


def test_a_revoked_key_is_refused_immediately():
    issued = issue_key(name="a", owner="acme")
    assert find_active_key(issued.key) is not None
    revoke(issued.record)
    assert find_active_key(issued.key) is None


def test_last_used_is_written_at_most_once_a_minute():
    issued = issue_key(name="a", owner="acme")
    find_active_key(issued.key)
    first = ApiKey.objects.get().last_used_at
    assert first is not None
    find_active_key(issued.key)
    assert ApiKey.objects.get().last_used_at == first
    # Two minutes later (for the remembered key as much as for its row):
    later = timezone.now() + timedelta(minutes=2)
    with mock.patch("identity_app.keys.timezone.now", return_value=later):
        find_active_key(issued.key)
        find_active_key(issued.key)
    assert ApiKey.objects.get().last_used_at == later
