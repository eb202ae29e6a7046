"""The admin's API key pages: a new key shown once and kept nowhere, revocation confirmed and
audited, limits and models edited, the key's usage from the rollup, and pinned query counts."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.utils import timezone

from conversations_app.models import UsageDay
from gateway_project.config import parse_config
from identity_app.keys import find_active_key, issue_key
from identity_app.models import ApiKey

pytestmark = pytest.mark.django_db

LIST = "/admin/identity_app/apikey/"
ADD = "/admin/identity_app/apikey/add/"


def change_url(record: ApiKey) -> str:
    return f"/admin/identity_app/apikey/{record.pk}/change/"


def revoke_url(record: ApiKey) -> str:
    return f"/admin/identity_app/apikey/{record.pk}/revoke/"


@pytest.fixture(autouse=True)
def models_configured(settings: Any) -> None:
    settings.GATEWAY = parse_config({
        "auth": {"enabled": True},
        "providers": {"demo": {"type": "demo"}},
        "models": [{"name": "demo", "provider": "demo", "aliases": ["demo-latest"]},
                   {"name": "demo-b", "provider": "demo"}],
    })


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    return client


def form(**fields: str) -> dict[str, str]:
    return {"name": "from-admin", "owner": "acme", "allowed_models": "", "rpm": "", "tpm": "", **fields}


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_a_new_key_is_on_the_page_after_save_and_nowhere_else(admin_client: Client, caplog: Any,
                                                               capfd: Any) -> None:
    # Every SQL statement is logged too (django.db.backends at DEBUG), with its parameters.
    connection.force_debug_cursor = True
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="django.db.backends"):
            response = admin_client.post(ADD, form(allowed_models="demo", rpm="30", tpm="9000"))
    finally:
        connection.force_debug_cursor = False
    assert response.status_code == 200  # rendered in the POST's answer, no redirect to carry it
    assert "no-store" in response["Cache-Control"]
    key = response.context["key"]
    record = ApiKey.objects.get()
    assert key.startswith(record.prefix) and key in response.content.decode()
    found = find_active_key(key)
    assert found is not None and found.pk == record.pk
    assert (record.allowed_models, record.rpm, record.tpm) == (["demo"], 30, 9000)

    # Not in a cookie, the session, the message storage or a log line.
    assert all(key not in morsel.value for morsel in response.cookies.values())
    assert all(key not in morsel.value for morsel in admin_client.cookies.values())
    assert all(key not in str(session.get_decoded()) and key not in session.session_data
               for session in Session.objects.all())
    storage = response.wsgi_request._messages  # type: ignore[attr-defined]
    assert all(key not in str(m) for m in [*storage._queued_messages, *messages_of(response)])
    assert any(r.name == "django.db.backends" and "INSERT" in r.getMessage() for r in caplog.records)
    assert all(key not in r.getMessage() and key not in str(r.__dict__) for r in caplog.records)
    assert key not in "".join(capfd.readouterr())
    # Nor in the database, the admin's history included.
    assert all(key not in str(v) for v in ApiKey.objects.values().get().values())
    entry = LogEntry.objects.get()
    assert key not in entry.object_repr and key not in entry.change_message

    # The pages that follow never show it again.
    for url in (LIST, change_url(record)):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert key not in page.content.decode() and record.key_hash not in page.content.decode()
        assert all(key not in morsel.value for morsel in page.cookies.values())


def test_unknown_models_are_a_warning_not_a_refusal(admin_client: Client) -> None:
    response = admin_client.post(ADD, form(allowed_models="demo-latest, gpt-nope"))
    assert response.status_code == 200
    assert ApiKey.objects.get().allowed_models == ["demo-latest", "gpt-nope"]
    assert ("Not a configured model: gpt-nope (configured: demo, demo-b); the key cannot use it until the config "
            "serves it.") in messages_of(response)


def test_limits_and_models_are_edited_and_revocation_is_not_a_form_field(admin_client: Client) -> None:
    record = issue_key(name="ci", owner="acme").record
    response = admin_client.post(change_url(record), form(name="ci", allowed_models="demo, demo-b", rpm="60",
                                                          tpm="1000", revoked_at="2026-01-01 00:00:00"), follow=True)
    assert response.status_code == 200
    record.refresh_from_db()
    assert (record.allowed_models, record.rpm, record.tpm, record.revoked_at) == (["demo", "demo-b"], 60, 1000, None)
    shown = messages_of(response)
    assert shown[0] == ("Rate limits are off in the config (rate_limit.enabled: false): the key's rpm and tpm are "
                        "not enforced.")
    assert len(shown) == 2 and "was changed successfully" in shown[1]
    admin_client.post(change_url(record), form(name="ci", allowed_models="", rpm="", tpm=""))
    record.refresh_from_db()
    assert (record.allowed_models, record.rpm, record.tpm) == ([], None, None)


def test_an_oidc_owner_is_refused(admin_client: Client) -> None:
    response = admin_client.post(ADD, form(owner="oidc:alice"))
    assert response.status_code == 200 and "may not start with" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_revoking_asks_first_then_revokes_and_records_it(admin_client: Client) -> None:
    issued = issue_key(name="ci", owner="acme")
    page = admin_client.get(change_url(issued.record)).content.decode()
    assert revoke_url(issued.record) in page
    confirm = admin_client.get(revoke_url(issued.record))
    assert confirm.status_code == 200 and "Yes, revoke" in confirm.content.decode()
    assert find_active_key(issued.key) is not None  # asking changed nothing

    done = admin_client.post(revoke_url(issued.record), {"post": "yes"}, follow=True)
    assert done.redirect_chain[-1][0] == change_url(issued.record)
    assert find_active_key(issued.key) is None
    assert "Revoked 1 key(s)" in " ".join(messages_of(done))
    entry = LogEntry.objects.get(object_id=str(issued.record.pk))
    assert (entry.action_flag, entry.change_message, entry.user.username) == (CHANGE, "Revoked.", "root")
    assert revoke_url(issued.record) not in done.content.decode()  # no button on a revoked key

    again = admin_client.post(revoke_url(issued.record), {"post": "yes"}, follow=True)
    assert "Revoked 0 key(s) (1 already revoked)" in " ".join(messages_of(again))
    assert LogEntry.objects.filter(object_id=str(issued.record.pk)).count() == 1
    assert "already revoked" in admin_client.get(revoke_url(issued.record)).content.decode()


def test_the_list_action_revokes_the_selected_keys_after_confirmation(admin_client: Client) -> None:
    chosen = [issue_key(name=f"k{i}", owner="acme") for i in range(3)]
    spared = issue_key(name="spared", owner="acme")
    selected = {"action": "revoke_selected", "_selected_action": [i.record.pk for i in chosen]}
    confirm = admin_client.post(LIST, selected)
    assert confirm.status_code == 200 and "Revoke 3 API keys?" in confirm.content.decode()
    assert all(find_active_key(i.key) is not None for i in chosen)

    admin_client.post(LIST, {**selected, "post": "yes"})
    assert all(find_active_key(i.key) is None for i in chosen)
    assert find_active_key(spared.key) is not None
    assert set(LogEntry.objects.values_list("change_message", flat=True)) == {"Revoked."}
    assert LogEntry.objects.count() == 3


def test_keys_cannot_be_deleted(admin_client: Client) -> None:
    record = issue_key(name="ci", owner="acme").record
    assert admin_client.get(f"/admin/identity_app/apikey/{record.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get(LIST).content.decode()


def test_only_staff_with_change_permission_reach_the_pages() -> None:
    record = issue_key(name="ci", owner="acme").record
    outsider = Client()
    outsider.force_login(User.objects.create_user("user", password="pw-for-tests-only"))
    for url in (LIST, ADD, change_url(record), revoke_url(record)):
        assert outsider.get(url).status_code == 302  # to the admin's login
    assert outsider.post(revoke_url(record), {"post": "yes"}).status_code == 302

    viewer = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    watcher = Client()
    watcher.force_login(viewer)
    assert watcher.get(change_url(record)).status_code == 200
    assert revoke_url(record) not in watcher.get(change_url(record)).content.decode()
    assert watcher.post(revoke_url(record), {"post": "yes"}).status_code == 403
    record.refresh_from_db()
    assert record.revoked_at is None


def usage(subject: str, model: str, days_ago: int = 0, **counts: Any) -> UsageDay:
    return UsageDay.objects.create(day=timezone.localdate() - timedelta(days=days_ago), model=model, provider="demo",
                                   owner="acme", subject=subject, **counts)


def test_the_change_page_shows_the_keys_usage_of_the_last_30_days(admin_client: Client) -> None:
    record = issue_key(name="ci", owner="acme").record
    other = issue_key(name="other", owner="acme").record
    mine = f"key:{record.pk}"
    usage(mine, "demo", 0, requests=3, errors=1, input_tokens=100, output_tokens=20, cost_usd=Decimal("0.25"))
    usage(mine, "demo", 29, requests=2, input_tokens=10, output_tokens=5, cost_usd=Decimal("0.5"))
    usage(mine, "demo-b", 3, requests=4, errors=2, input_tokens=7, output_tokens=1)
    usage(mine, "demo", 30, requests=1000)  # older than 30 days
    usage(f"key:{other.pk}", "demo", 0, requests=500)  # another key
    usage(f"key:{record.pk}0", "demo", 0, requests=700)  # a key whose id starts with this one's

    page = admin_client.get(change_url(record)).content.decode()
    cells = re.findall(r"<tr>.*?</tr>", page, re.DOTALL)
    assert "<tr><td>demo</td><td>5</td><td>1</td><td>110</td><td>25</td><td>135</td><td>0.7500</td></tr>" in cells
    assert "<tr><td>demo-b</td><td>4</td><td>2</td><td>7</td><td>1</td><td>8</td><td>0.0000</td></tr>" in cells
    assert "<tr><td>all models</td><td>9</td><td>3</td><td>117</td><td>26</td><td>143</td><td>0.7500</td></tr>" in cells

    listing = admin_client.get(LIST)
    shown = {row.name: row.requests_30d for row in listing.context["cl"].result_list}
    assert shown == {"ci": 9, "other": 500}
    fresh = issue_key(name="fresh", owner="acme").record
    assert "No requests since" in admin_client.get(change_url(fresh)).content.decode()


@pytest.mark.parametrize("count", [3, 60])
def test_every_page_takes_a_fixed_number_of_queries(admin_client: Client, django_assert_num_queries: Any,
                                                    count: int) -> None:
    records = [issue_key(name=f"k{i}", owner=f"owner{i % 7}", allowed_models=["demo"], rpm=i + 1).record
               for i in range(count)]
    for record in records:
        usage(f"key:{record.pk}", "demo", 1, requests=2)
        usage(f"key:{record.pk}", "demo-b", 2, requests=1)
    target = records[0]
    # Warm the session and the content-type cache (the add page looks the key's type up; whether an
    # earlier test in this process already did depends on the order xdist gives).
    admin_client.get(LIST)
    admin_client.get(ADD)

    # session, user, count, count of all (the "N total" beside a filtered count), the page of keys
    # with each one's 30-day requests as a subquery
    with django_assert_num_queries(5):
        assert admin_client.get(LIST).status_code == 200
    with django_assert_num_queries(5):
        assert admin_client.get(LIST + "?state=active&q=k1").status_code == 200
    with django_assert_num_queries(2):  # session, user
        assert admin_client.get(ADD).status_code == 200
    with django_assert_num_queries(4):  # session, user, the key, its usage grouped by model
        assert admin_client.get(change_url(target)).status_code == 200
    with django_assert_num_queries(3):  # session, user, the key
        assert admin_client.get(revoke_url(target)).status_code == 200
    # session, user, the key, lock the active ones, the UPDATE, the history (+ 2 savepoints)
    with django_assert_num_queries(8):
        assert admin_client.post(revoke_url(target), {"post": "yes"}).status_code == 302
    everyone = {"action": "revoke_selected", "_selected_action": [r.pk for r in records]}
    # session, user, the list's counts and page (the action runs on the selection), no writes
    with django_assert_num_queries(5):
        assert admin_client.post(LIST, everyone).status_code == 200
    # the same, then all the selected keys revoked and recorded at once
    with django_assert_num_queries(10):
        assert admin_client.post(LIST, {**everyone, "post": "yes"}).status_code == 302
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 0
    assert LogEntry.objects.count() == count
    # session, user, a savepoint, the key, the history, release
    with django_assert_num_queries(6):
        assert admin_client.post(ADD, form()).status_code == 200
