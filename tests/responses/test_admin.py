"""The admin shows stored conversations and turn transcripts without per-row queries."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.urls import reverse


@pytest.fixture
def staff_client(api):
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    api.client.login(username="admin", password="pw")
    return api.client


def test_the_response_changelist_and_transcript_render(api, staff_client, django_assert_max_num_queries, fake_openai):
    first = api.create(model="gpt-test", input="Hello <b>admin</b>", instructions="Be nice").json()
    for _ in range(5):
        api.create(model="gpt-test", input="more", previous_response_id=first["id"])
    with django_assert_max_num_queries(8):
        page = staff_client.get("/admin/conversations_app/storedresponse/")
    assert page.status_code == 200 and first["id"] in page.content.decode()
    # The admin quotes ids in its URLs ("_22" would otherwise read as '"'), as its own links do.
    detail = staff_client.get(reverse("admin:conversations_app_storedresponse_change", args=[quote(first["id"])]))
    html = detail.content.decode()
    assert detail.status_code == 200
    assert "Hello &lt;b&gt;admin&lt;/b&gt;" in html  # escaped, never rendered as markup
    assert "Hello from the fake upstream." in html and "Be nice" in html
    assert staff_client.get("/admin/conversations_app/conversation/").status_code == 200


def test_every_id_shape_opens_in_the_admin(api, staff_client, monkeypatch):
    # An id whose hex starts with digits the admin treats as escapes ("_22" reads as '"') still opens.
    tricky = "resp_22" + "0" * 46
    monkeypatch.setattr("responses_app.pipeline.new_id", lambda prefix: tricky)
    assert api.create(model="gpt-test", input="x").json()["id"] == tricky
    url = reverse("admin:conversations_app_storedresponse_change", args=[quote(tricky)])
    assert staff_client.get(url).status_code == 200
