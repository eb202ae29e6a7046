"""The Conversations API through the openai SDK in strict mode (`_strict_response_validation=True`)
against the gateway under real gunicorn (two workers): create with items, retrieve, update the
metadata, add 120 items and page through them both ways, retrieve and delete an item, delete the
conversation (then 404 everywhere, and its rows removed in the background)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import psycopg
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess

pytestmark = pytest.mark.e2e

CONFIG = """
logging: {format: text, level: warn}
providers:
  demo: {type: demo}
models:
  - {name: demo, provider: demo}
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


@pytest.fixture
def client(gateway: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


def _wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _text(item: Any) -> str:
    return str(item.content[0].text)


def _rows(gateway: GatewayProcess, conversation_id: str) -> int:
    """The rows the conversation still has, in every table that holds part of it."""
    with psycopg.connect(gateway.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM conversations_app_conversation WHERE id = %(c)s)"
            " + (SELECT count(*) FROM conversations_app_conversationitem WHERE conversation_id = %(c)s)"
            " + (SELECT count(*) FROM conversations_app_storedresponse WHERE conversation_id = %(c)s)",
            {"c": conversation_id}).fetchone()
    assert row is not None
    return int(row[0])


def test_the_conversations_api_from_create_to_delete(client, gateway):
    conversation = client.conversations.create(items=[_user("Hello!"), _user("How are you?")],
                                               metadata={"topic": "demo"})
    validate("Conversation", _wire(conversation))
    assert conversation.object == "conversation" and conversation.metadata == {"topic": "demo"}
    assert abs(conversation.created_at - time.time()) < 60

    assert client.conversations.retrieve(conversation.id) == conversation
    updated = client.conversations.update(conversation.id, metadata={"topic": "paging", "run": "e2e"})
    assert updated.metadata == {"topic": "paging", "run": "e2e"} and updated.id == conversation.id
    assert client.conversations.retrieve(conversation.id).metadata == updated.metadata

    # 120 more items, 20 at a time (the most one request may add).
    for batch in range(6):
        added = client.conversations.items.create(conversation.id, items=[_user(f"item {batch * 20 + i}")
                                                                          for i in range(20)],
                                                  include=["message.output_text.logprobs"])
        validate("ConversationItemList", _wire(added))
        assert [_text(item) for item in added.data] == [f"item {batch * 20 + i}" for i in range(20)]
        assert (added.first_id, added.last_id, added.has_more) == (added.data[0].id, added.data[-1].id, False)
    texts = ["Hello!", "How are you?", *[f"item {i}" for i in range(120)]]

    # Auto-paging with the SDK's cursor (after = the last id of each page), both orders.
    ascending = list(client.conversations.items.list(conversation.id, order="asc", limit=7))
    assert [_text(item) for item in ascending] == texts
    descending = list(client.conversations.items.list(conversation.id, include=["reasoning.encrypted_content"]))
    assert [_text(item) for item in descending] == texts[::-1]
    assert len({item.id for item in ascending}) == 122
    first_page = client.conversations.items.list(conversation.id, limit=100)
    assert len(first_page.data) == 100 and first_page.has_more is True
    assert [_text(item) for item in first_page.get_next_page().data] == texts[:22][::-1]

    # A turn in the conversation appends its input and output; they list like any item.
    turn = client.responses.create(model="demo", input="one more turn", conversation=conversation.id)
    assert turn.conversation is not None and turn.conversation.id == conversation.id
    newest = client.conversations.items.list(conversation.id, limit=2)
    assert [item.type for item in newest.data] == ["message", "message"]
    assert [(item.role, _text(item)) for item in newest.data][1] == ("user", "one more turn")
    for item in newest.data:
        validate("ConversationItem", _wire(item))

    target = ascending[1]
    item = client.conversations.items.retrieve(target.id, conversation_id=conversation.id)
    validate("ConversationItem", _wire(item))
    assert item == target and item.type == "message" and item.status == "completed"
    after_delete = client.conversations.items.delete(target.id, conversation_id=conversation.id)
    validate("Conversation", _wire(after_delete))
    assert after_delete.id == conversation.id and after_delete.metadata == updated.metadata
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(target.id, conversation_id=conversation.id)
    remaining = [_text(item) for item in client.conversations.items.list(conversation.id, order="asc", limit=100)]
    assert remaining == [t for t in texts if t != "How are you?"] + ["one more turn", remaining[-1]]

    deleted = client.conversations.delete(conversation.id)
    validate("ConversationDeletedResource", _wire(deleted))
    assert (deleted.id, deleted.object, deleted.deleted) == (conversation.id, "conversation.deleted", True)
    calls = [
        lambda: client.conversations.retrieve(conversation.id),
        lambda: client.conversations.update(conversation.id, metadata={"a": "b"}),
        lambda: client.conversations.delete(conversation.id),
        lambda: client.conversations.items.list(conversation.id),
        lambda: client.conversations.items.create(conversation.id, items=[_user("late")]),
        lambda: client.conversations.items.retrieve(ascending[0].id, conversation_id=conversation.id),
        lambda: client.conversations.items.delete(ascending[0].id, conversation_id=conversation.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.code == "not_found"
        assert missing.value.message.endswith(f"Conversation with id '{conversation.id}' not found.")

    # Its rows go in batches in the background of the worker that took the DELETE.
    deadline = time.monotonic() + 20
    while _rows(gateway, conversation.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _rows(gateway, conversation.id) == 0


def test_bad_input_gets_the_documented_errors(client):
    with pytest.raises(openai.BadRequestError) as too_many:
        client.conversations.create(items=[_user(str(i)) for i in range(21)])
    assert (too_many.value.code, too_many.value.param) == ("array_above_max_length", "items")
    with pytest.raises(openai.BadRequestError) as metadata:
        client.conversations.create(metadata={"k": "v" * 513})
    assert (metadata.value.code, metadata.value.param) == ("string_above_max_length", "metadata.k")
    conversation = client.conversations.create()
    assert list(client.conversations.items.list(conversation.id)) == []
    with pytest.raises(openai.BadRequestError) as cursor:
        client.conversations.items.list(conversation.id, after="msg_nope")
    assert (cursor.value.code, cursor.value.param) == ("invalid_value", "after")
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve("conv_nope")
