"""manage.py purge_conversations and the Conversations API: conversations deleted through the API
are removed in batches with a progress line each, idle ones like chains; the others stay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations_app.api_store import api_conversations
from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from tests.conftest import ApiClient


def _purge(*args: str, err: StringIO | None = None) -> str:
    out = StringIO()
    call_command("purge_conversations", *args, stdout=out, stderr=err if err is not None else StringIO())
    return out.getvalue()


def _conversation(api: ApiClient, *texts: str) -> str:
    items = [{"role": "user", "content": text, "id": f"msg_{text}"} for text in texts]
    return str(api.post("/v1/conversations", {"items": items}).json()["id"])


def test_conversations_deleted_through_the_api_are_removed_in_batches_with_progress(api: ApiClient):
    deleted, kept = _conversation(api, "a", "b", "c"), _conversation(api, "kept")
    assert api.create(model="gpt-test", input="a turn", conversation=deleted).status_code == 200
    assert api.delete(f"/v1/conversations/{deleted}").status_code == 200
    # The background removal is not started inside a test's transaction: the command finishes it.
    assert Conversation.objects.filter(pk=deleted).exists()

    dry = _purge("--dry-run")
    assert "would delete 1 conversation(s) deleted through the API" in dry and "removed" not in dry
    assert ConversationItem.objects.filter(conversation_id=deleted).count() == 5

    err = StringIO()
    out = _purge("--batch-size", "2", err=err)
    prefix = f"conversations deleted through the API: {deleted} (1/1)"
    assert err.getvalue().splitlines() == [
        f"{prefix}: 2 added items removed", f"{prefix}: 3 added items removed",
        f"{prefix}: 2 entries removed", f"{prefix}: 2 turn items removed", f"{prefix}: 1 turns removed",
        f"{prefix}: conversation removed",
    ]
    assert out.splitlines() == [
        "deleted 1 conversation(s) deleted through the API",
        "no conversation deleted for age: pass --older-than (e.g. 30d) or set conversations.retention in the "
        "config file",
    ]
    assert not Conversation.objects.filter(pk=deleted).exists()
    assert not ConversationItem.objects.filter(conversation_id=deleted).exists()
    assert not StoredResponse.objects.filter(conversation_id=deleted).exists()
    assert list(Item.objects.values_list("item_id", flat=True)) == ["msg_kept"]
    assert api.get(f"/v1/conversations/{kept}/items").json()["data"][0]["id"] == "msg_kept"
    assert "deleted 0 conversation(s) deleted through the API" in _purge()


def test_idle_conversations_of_the_api_go_with_idle_chains(api: ApiClient):
    idle, active = _conversation(api, "old"), _conversation(api, "new")
    chain = api.create(model="gpt-test", input="an old chain").json()
    Conversation.objects.exclude(pk=active).update(updated_at=timezone.now() - timedelta(days=3))
    assert "would delete 2 conversation(s) idle for more than 2 days" in _purge("--older-than", "2d", "--dry-run")
    err = StringIO()
    out = _purge("--older-than", "2d", err=err)
    assert f"idle API conversations: {idle} (1/1): conversation removed" in err.getvalue().splitlines()
    assert "deleted 2 conversation(s) idle for more than 2 days (1 chain(s), 1 API conversation(s))" in out
    assert list(Conversation.objects.values_list("pk", flat=True)) == [active]
    assert api.get(f"/v1/responses/{chain['id']}").status_code == 404
    assert api.get(f"/v1/conversations/{idle}").status_code == 404
    assert api.get(f"/v1/conversations/{active}").status_code == 200


def test_a_batch_size_below_one_is_a_command_error(db: None):
    with pytest.raises(CommandError, match="--batch-size"):
        _purge("--batch-size", "0")


def test_an_interrupted_purge_of_idle_api_conversations_hides_them_and_the_next_run_finishes(
        api: ApiClient, monkeypatch: pytest.MonkeyPatch):
    idle = _conversation(api, "a", "b", "c")
    Conversation.objects.filter(pk=idle).update(updated_at=timezone.now() - timedelta(days=3))
    real = api_conversations.inner.remove_in_batches

    def interrupted(conversation_id: str, *, batch_size: int = 500) -> Iterator[str]:
        steps = real(conversation_id, batch_size=batch_size)
        yield next(steps)
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM after the first batch

    monkeypatch.setattr(api_conversations.inner, "remove_in_batches", interrupted)
    err = StringIO()
    with pytest.raises(SystemExit) as stopped:
        _purge("--older-than", "2d", "--batch-size", "1", err=err)
    assert stopped.value.code == 130
    assert "interrupted: what was deleted so far is gone, nothing is half-deleted" in err.getvalue()
    # Part of its rows are gone, and no client can see it any more: it is deleted as far as the API goes.
    assert ConversationItem.objects.filter(conversation_id=idle).count() < 3
    assert api.get(f"/v1/conversations/{idle}").status_code == 404
    monkeypatch.undo()
    assert "deleted 1 conversation(s) deleted through the API" in _purge()
    assert not Conversation.objects.filter(pk=idle).exists() and not Item.objects.exists()
