"""manage.py purge_conversations: idle conversations go, whole; active ones stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations_app.models import Conversation, Item, StoredResponse


def _purge(*args):
    out = StringIO()
    call_command("purge_conversations", *args, stdout=out)
    return out.getvalue()


def test_it_deletes_idle_conversations_with_their_responses_and_items(api):
    old = api.create(model="gpt-test", input="old").json()
    api.create(model="gpt-test", input="old too", previous_response_id=old["id"])
    fresh = api.create(model="gpt-test", input="fresh").json()
    Conversation.objects.filter(responses__id=old["id"]).update(updated_at=timezone.now() - timedelta(days=3))

    assert "would delete 1 conversation(s)" in _purge("--older-than", "2d", "--dry-run")
    assert Conversation.objects.count() == 2

    assert "deleted 1 conversation(s) idle for more than 172800s" in _purge("--older-than", "2d", "--batch-size", "1")
    assert list(StoredResponse.objects.values_list("id", flat=True)) == [fresh["id"]]
    assert Item.objects.filter(response_id=old["id"]).count() == 0
    assert api.get(f"/v1/responses/{old['id']}").status_code == 404


def test_the_default_idle_time_is_the_configured_ttl(api, settings):
    api.create(model="gpt-test", input="x")
    Conversation.objects.update(updated_at=timezone.now() - timedelta(seconds=settings.GATEWAY.conversations.ttl + 5))
    assert "deleted 1" in _purge()


def test_a_bad_duration_is_a_command_error(db):
    with pytest.raises(CommandError, match="--older-than"):
        _purge("--older-than", "soon")
