"""conversations_app.api_store: the Conversations API's storage, below the HTTP routes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from conversations_app.api_store import api_conversations
from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from conversations_app.store import UnknownCursor
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db


def _message(text: str, item_id: str | None = None, role: str = "user") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": role, "status": "completed",
                            "content": [{"type": "input_text", "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


def _messages(*texts: str) -> list[dict[str, Any]]:
    return [_message(text, f"msg_{text}") for text in texts]


def _texts(items: list[dict[str, Any]] | None) -> list[str]:
    assert items is not None
    return [item["content"][0]["text"] for item in items]


def _new(*texts: str, owner: str = "", metadata: dict[str, str] | None = None) -> str:
    return api_conversations.create_conversation(owner, metadata or {}, _messages(*texts)).id


def _rows(conversation_id: str) -> dict[str, int]:
    """Every row a conversation has, by table (the client's items are the ones with no response)."""
    return {
        "conversation": Conversation.objects.filter(pk=conversation_id).count(),
        "entries": ConversationItem.objects.filter(conversation_id=conversation_id).count(),
        "added items": Item.objects.filter(response__isnull=True, item_id__in=ConversationItem.objects.filter(
            conversation_id=conversation_id).values("public_id")).count(),
        "turns": StoredResponse.objects.filter(conversation_id=conversation_id).count(),
        "turn items": Item.objects.filter(response__conversation_id=conversation_id).count(),
    }


def test_a_conversation_is_created_with_its_items_in_order_and_metadata():
    created = api_conversations.create_conversation("acme", {"topic": "demo"}, _messages("a", "b", "c"))
    assert created.id.startswith("conv_") and created.metadata == {"topic": "demo"}
    assert api_conversations.get_conversation(created.id, "acme") == created
    assert _texts(api_conversations.items(created.id, "acme")) == ["a", "b", "c"]
    row = Conversation.objects.get(pk=created.id)
    assert (row.kind, row.next_item_seq, row.turn_count) == ("api", 3, 0)
    # The client's items belong to no response; their entries number them in order.
    assert list(ConversationItem.objects.filter(conversation_id=created.id).order_by("seq")
                .values_list("seq", "public_id", "item__response_id")) == [
        (0, "msg_a", None), (1, "msg_b", None), (2, "msg_c", None)]


def test_an_empty_conversation_has_no_items():
    conversation = _new()
    assert api_conversations.items(conversation, "") == []
    page = api_conversations.list_items(conversation, "", limit=20, order="desc", after=None)
    assert page is not None and (page.items, page.has_more) == ([], False)


def test_appended_items_come_after_the_others_and_ids_stay_unique_in_the_conversation():
    conversation = _new("a", "b")
    added = api_conversations.add_items(conversation, "", [_message("b again", "msg_b"), _message("c", "msg_c"),
                                                           _message("c again", "msg_c"), _message("no id")])
    assert added is not None
    ids = [item["id"] for item in added]
    # An id the conversation already has (or one repeated in the batch) is replaced by a fresh one.
    assert ids[1] == "msg_c" and ids[0] != "msg_b" and ids[2] != "msg_c"
    assert all(item_id.startswith("msg_") for item_id in ids[:3]) and ids[3] and len(set(ids)) == 4
    stored = api_conversations.items(conversation, "")
    assert _texts(stored) == ["a", "b", "b again", "c", "c again", "no id"]
    assert [item["id"] for item in stored or []][2:] == ids
    assert Conversation.objects.get(pk=conversation).next_item_seq == 6


def test_updating_replaces_the_metadata():
    conversation = _new(metadata={"a": "1", "b": "2"})
    updated = api_conversations.update_conversation(conversation, "", {"c": "3"})
    assert updated is not None and updated.metadata == {"c": "3"}
    assert api_conversations.get_conversation(conversation, "").metadata == {"c": "3"}


def test_listing_pages_by_the_sequence_in_both_orders():
    conversation = _new(*[f"m{i}" for i in range(7)])

    def page(order: str, after: str | None, limit: int = 3) -> tuple[list[str], bool]:
        result = api_conversations.list_items(conversation, "", limit=limit, order=order, after=after)
        assert result is not None
        return _texts(result.items), result.has_more

    assert page("asc", None) == (["m0", "m1", "m2"], True)
    assert page("asc", "msg_m2") == (["m3", "m4", "m5"], True)
    assert page("asc", "msg_m5") == (["m6"], False)
    assert page("desc", None) == (["m6", "m5", "m4"], True)
    assert page("desc", "msg_m4") == (["m3", "m2", "m1"], True)
    assert page("desc", "msg_m1") == (["m0"], False)
    assert page("asc", "msg_m3", limit=4) == (["m4", "m5", "m6"], False)


@pytest.mark.parametrize("after", ["msg_nope", "msg_elsewhere", "x" * 101, "msg\x00"])
def test_a_cursor_that_names_no_item_of_the_conversation_is_refused(after):
    conversation = _new("a")
    _new("elsewhere")  # an item of another conversation is not a cursor here
    with pytest.raises(UnknownCursor):
        api_conversations.list_items(conversation, "", limit=20, order="asc", after=after)


def test_an_item_is_read_from_its_own_conversation_only():
    conversation, other = _new("a", "b"), _new("elsewhere")
    assert api_conversations.get_item(conversation, "", "msg_b")["content"][0]["text"] == "b"
    assert api_conversations.get_item(conversation, "", "msg_elsewhere") is False
    assert api_conversations.get_item(conversation, "", "x" * 200) is False
    assert api_conversations.get_item("conv_nope", "", "msg_b") is None
    assert api_conversations.get_item(other, "", "msg_elsewhere") is not None


def test_deleting_an_added_item_removes_it_and_only_it():
    conversation = _new("a", "b", "c")
    assert api_conversations.delete_item(conversation, "", "msg_b") is True
    assert _texts(api_conversations.items(conversation, "")) == ["a", "c"]
    assert not Item.objects.filter(item_id="msg_b").exists()
    assert api_conversations.delete_item(conversation, "", "msg_b") is False
    assert api_conversations.delete_item("conv_nope", "", "msg_a") is None
    # Later appends never reuse a removed item's place.
    api_conversations.add_items(conversation, "", _messages("d"))
    assert _texts(api_conversations.items(conversation, "")) == ["a", "c", "d"]


def test_deleting_a_turns_item_takes_it_out_of_the_conversation_but_not_out_of_its_response(api: ApiClient):
    conversation = _new("a")
    turn = api.create(model="gpt-test", input="question", conversation=conversation).json()
    answer = turn["output"][0]["id"]
    assert api_conversations.delete_item(conversation, "", answer) is True
    assert _texts(api_conversations.items(conversation, "")) == ["a", "question"]
    assert api.get(f"/v1/responses/{turn['id']}").json()["output"] == turn["output"]


def test_references_are_looked_up_by_id_in_the_conversation():
    conversation = _new("a", "b", "c")
    found = api_conversations.referenced_items(conversation, "", ["msg_c", "msg_a", "msg_nope", "x\x00"])
    assert _texts(found) == ["a", "c"]
    assert api_conversations.referenced_items(conversation, "someone-else", ["msg_a"]) is None


def test_another_owners_or_a_deleted_conversation_is_not_there_for_any_operation():
    mine, deleted = _new("a", owner="acme"), _new("b", owner="acme")
    assert api_conversations.delete_conversation(deleted, "acme") is True
    assert api_conversations.delete_conversation(deleted, "acme") is False
    for conversation, owner in ((mine, "globex"), (mine, ""), (deleted, "acme"), ("conv_nope", "acme"),
                                ("x" * 300, "acme")):
        assert api_conversations.get_conversation(conversation, owner) is None
        assert api_conversations.update_conversation(conversation, owner, {"x": "y"}) is None
        assert api_conversations.delete_conversation(conversation, owner) is False
        assert api_conversations.items(conversation, owner) is None
        assert api_conversations.list_items(conversation, owner, limit=20, order="asc", after="msg_a") is None
        assert api_conversations.get_item(conversation, owner, "msg_a") is None
        assert api_conversations.delete_item(conversation, owner, "msg_a") is None
        assert api_conversations.add_items(conversation, owner, _messages("z")) is None
    # Nothing was written by any of those.
    assert Conversation.objects.get(pk=mine).metadata == {} and _texts(api_conversations.items(mine, "acme")) == ["a"]
    assert not Item.objects.filter(item_id="msg_z").exists()


def test_a_chain_is_not_a_conversation_of_the_api(api: ApiClient):
    api.create(model="gpt-test", input="a chain's first turn")
    chain = Conversation.objects.get()
    assert chain.kind == "chain"
    assert api_conversations.get_conversation(chain.id, "") is None


def test_removing_in_batches_removes_every_row_of_the_conversation_and_nothing_else(api: ApiClient):
    conversation, other = _new("a", "b", "c"), _new("kept")
    for text in ("one", "two", "three"):
        assert api.create(model="gpt-test", input=text, conversation=conversation).status_code == 200
    api_conversations.add_items(conversation, "", _messages("d"))
    before = _rows(conversation)
    assert before == {"conversation": 1, "entries": 10, "added items": 4, "turns": 3, "turn items": 6}
    other_before = _rows(other)

    steps = list(api_conversations.remove_in_batches(conversation, batch_size=2))
    assert steps == ["2 added items", "4 added items", "2 entries", "4 entries", "6 entries", "2 turn items",
                     "4 turn items", "6 turn items", "2 turns", "3 turns", "conversation"]
    assert _rows(conversation) == dict.fromkeys(before, 0)
    assert _rows(other) == other_before


def test_purging_removes_the_deleted_conversations_in_batches_with_progress():
    deleted, kept = _new("a", "b", "c"), _new("d")
    api_conversations.delete_conversation(deleted, "")
    assert api_conversations.purge_deleted(dry_run=True) == 1
    assert Conversation.objects.filter(pk=deleted).exists()
    progress: list[str] = []
    assert api_conversations.purge_deleted(batch_size=2, progress=progress.append) == 1
    assert progress == [f"{deleted} (1/1): 2 added items", f"{deleted} (1/1): 3 added items",
                        f"{deleted} (1/1): conversation"]
    assert not Conversation.objects.filter(pk=deleted).exists()
    assert _texts(api_conversations.items(kept, "")) == ["d"]
    assert api_conversations.purge_deleted() == 0


def test_purging_idle_conversations_of_the_api_spares_the_active_ones():
    idle, active = _new("a"), _new("b")
    Conversation.objects.filter(pk=idle).update(updated_at=timezone.now() - timedelta(days=3))
    assert api_conversations.purge_idle(86400, dry_run=True) == 1
    assert api_conversations.purge_idle(86400) == 1
    assert not Conversation.objects.filter(pk=idle).exists() and not Item.objects.filter(item_id="msg_a").exists()
    assert api_conversations.get_conversation(active, "") is not None
