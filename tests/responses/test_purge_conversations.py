"""manage.py purge_conversations: nothing goes for age without --older-than or a configured
retention; idle conversations go whole, in batches, with progress on stderr; active ones stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations_app.models import Conversation, Item, StoredResponse
from conversations_app.store import store
from gateway_project.config import describe_duration, parse_config
from tests.conftest import ApiClient


def _purge(*args: str, err: StringIO | None = None) -> str:
    out = StringIO()
    call_command("purge_conversations", *args, stdout=out, stderr=err or StringIO())
    return out.getvalue()


def _age(days: float, *conversation_ids: str) -> None:
    rows = Conversation.objects.filter(pk__in=conversation_ids) if conversation_ids else Conversation.objects.all()
    rows.update(updated_at=timezone.now() - timedelta(days=days))


def test_it_deletes_idle_conversations_with_their_responses_and_items(api: ApiClient):
    old = api.create(model="gpt-test", input="old").json()
    api.create(model="gpt-test", input="old too", previous_response_id=old["id"])
    fresh = api.create(model="gpt-test", input="fresh").json()
    _age(3, StoredResponse.objects.get(pk=old["id"]).conversation_id)

    assert "would delete 1 conversation(s) idle for more than 2 days" in _purge("--older-than", "2d", "--dry-run")
    assert Conversation.objects.count() == 2

    err = StringIO()
    out = _purge("--older-than", "2d", "--batch-size", "1", err=err)
    assert "deleting conversations with no turn for 2 days (--older-than 2d)" in out
    assert "deleted 1 conversation(s) idle for more than 2 days (1 chain(s), 0 API conversation(s))" in out
    assert "chains: 1/1 (100%)" in err.getvalue()
    assert list(StoredResponse.objects.values_list("id", flat=True)) == [fresh["id"]]
    assert Item.objects.filter(response_id=old["id"]).count() == 0
    assert api.get(f"/v1/responses/{old['id']}").status_code == 404


def test_without_older_than_or_a_retention_nothing_is_deleted_for_age(api: ApiClient, settings: Any):
    assert settings.GATEWAY.conversations.retention is None
    api.create(model="gpt-test", input="x")
    _age(400)
    out = _purge()
    assert "no conversation deleted for age: pass --older-than" in out
    assert Conversation.objects.count() == 1


def test_the_configured_retention_is_the_default_and_ttl_deletes_nothing(api: ApiClient, settings: Any):
    settings.GATEWAY = parse_config({**settings.GATEWAY.model_dump(exclude_unset=True),
                                     "conversations": {"retention": "30d", "ttl": "1h"}})
    kept, gone = (api.create(model="gpt-test", input=text).json() for text in ("kept", "gone"))
    _age(2, StoredResponse.objects.get(pk=kept["id"]).conversation_id)  # idle far beyond ttl, within retention
    _age(31, StoredResponse.objects.get(pk=gone["id"]).conversation_id)
    out = _purge()
    assert "deleting conversations with no turn for 30 days (conversations.retention)" in out
    assert "deleted 1 conversation(s) idle for more than 30 days" in out
    assert list(StoredResponse.objects.values_list("id", flat=True)) == [kept["id"]]


def test_an_interrupted_purge_leaves_whole_conversations_and_the_next_run_finishes(api: ApiClient):
    for index in range(5):
        api.create(model="gpt-test", input=f"turn {index}")
    _age(3)

    def interrupt_after_two_batches(done: int) -> None:
        if done == 4:
            raise KeyboardInterrupt  # Ctrl-C between two batches

    with pytest.raises(KeyboardInterrupt):
        store.purge_idle(86400, batch_size=2, progress=interrupt_after_two_batches)
    # Two batches of two went whole; the one left is intact.
    assert Conversation.objects.count() == 1
    survivor = Conversation.objects.get()
    assert StoredResponse.objects.filter(conversation=survivor).count() == 1
    assert Item.objects.filter(response__conversation=survivor).count() >= 2
    assert "deleted 1 conversation(s) idle for more than 1 day" in _purge("--older-than", "1d")
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(("seconds", "words"), [
    (2592000, "30 days"), (86400, "1 day"), (5400, "1 hour 30 minutes"), (90061, "1 day 1 hour"),
    (45, "45 seconds"), (0.5, "500 ms"),
])
def test_durations_are_said_in_words(seconds: float, words: str):
    assert describe_duration(seconds) == words


def test_bad_flags_are_command_errors(db: None):
    with pytest.raises(CommandError, match="--older-than"):
        _purge("--older-than", "soon")
    with pytest.raises(CommandError, match="--older-than: must be more than 0"):
        _purge("--older-than", "0s")

