"""manage.py purge_conversations and the Conversations API: conversations deleted through the API
are removed in batches with a progress line each, idle ones like chains; the others stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from tests.conftest import ApiClient


def _purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_conversations", *args, stdout=out)
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

    out = _purge("--batch-size", "2")
    assert out.splitlines() == [
        f"  {deleted}: 2 added items removed", f"  {deleted}: 3 added items removed",
        f"  {deleted}: 2 entries removed", f"  {deleted}: 2 turn items removed", f"  {deleted}: 1 turns removed",
        f"  {deleted}: conversation removed",
        "deleted 1 conversation(s) deleted through the API",
        "deleted 0 conversation(s) idle for more than 3600s",
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
    assert "would delete 2 conversation(s) idle for more than 172800s" in _purge("--older-than", "2d", "--dry-run")
    out = _purge("--older-than", "2d")
    assert f"  {idle}: conversation removed" in out.splitlines()
    assert "deleted 2 conversation(s) idle for more than 172800s" in out
    assert list(Conversation.objects.values_list("pk", flat=True)) == [active]
    assert api.get(f"/v1/responses/{chain['id']}").status_code == 404
    assert api.get(f"/v1/conversations/{idle}").status_code == 404
    assert api.get(f"/v1/conversations/{active}").status_code == 200


def test_a_batch_size_below_one_is_a_command_error(db: None):
    with pytest.raises(CommandError, match="--batch-size"):
        _purge("--batch-size", "0")
