"""The Conversations API over HTTP: /v1/conversations and its items, every body checked against the
openai SDK's types and the spec file's schemas (tests/contract.py)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from gateway_project import concurrency
from gateway_project.config import GatewayConfig
from tests.conftest import ApiClient
from tests.contract import validate
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db


def _user(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}


def _create(api: ApiClient, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/conversations", body)
    assert response.status_code == 200, response.content
    validate("Conversation", response.json())
    return response.json()


def _list(api: ApiClient, conversation_id: str, **params: Any) -> dict[str, Any]:
    response = api.get(f"/v1/conversations/{conversation_id}/items", **params)
    assert response.status_code == 200, response.content
    page = response.json()
    if page["data"]:
        validate("ConversationItemList", page)
    return page


def _texts(page: dict[str, Any]) -> list[str]:
    return [item["content"][0]["text"] for item in page["data"]]


# --- conversations -----------------------------------------------------------------------------

def test_a_conversation_is_created_with_items_and_metadata(api: ApiClient):
    before = int(time.time())
    body = _create(api, items=[_user("Hello!"), {"role": "assistant", "content": "Hi."}], metadata={"topic": "demo"})
    assert body["object"] == "conversation" and body["id"].startswith("conv_")
    assert body["metadata"] == {"topic": "demo"} and before <= body["created_at"] <= time.time()
    page = _list(api, body["id"], order="asc")
    assert _texts(page) == ["Hello!", "Hi."]
    assert [(item["role"], item["status"], item["content"][0]["type"]) for item in page["data"]] == [
        ("user", "completed", "input_text"), ("assistant", "completed", "output_text")]


@pytest.mark.parametrize("body", [b"", b"{}", b'{"items": null, "metadata": null}', b'{"items": []}'])
def test_a_conversation_may_start_empty(api: ApiClient, body: bytes):
    created = _create(api) if body == b"{}" else api.post("/v1/conversations", body).json()
    validate("Conversation", created)
    assert created["metadata"] == {}
    page = _list(api, created["id"])
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_retrieve_returns_the_conversation(api: ApiClient):
    created = _create(api, metadata={"a": "b"})
    fetched = api.get(f"/v1/conversations/{created['id']}")
    assert fetched.status_code == 200
    validate("Conversation", fetched.json())
    assert fetched.json() == created


def test_update_replaces_the_metadata_and_null_clears_it(api: ApiClient):
    created = _create(api, metadata={"a": "1", "b": "2"})
    path = f"/v1/conversations/{created['id']}"
    updated = api.post(path, {"metadata": {"c": "3"}})
    assert updated.status_code == 200
    validate("Conversation", updated.json())
    assert updated.json() == {**created, "metadata": {"c": "3"}}
    assert api.get(path).json()["metadata"] == {"c": "3"}
    assert api.post(path, {"metadata": None}).json()["metadata"] == {}


def test_delete_answers_conversation_deleted_and_then_every_route_is_404(api: ApiClient):
    created = _create(api, items=[_user("secret", id="msg_secret")])
    path = f"/v1/conversations/{created['id']}"
    deleted = api.delete(path)
    assert deleted.status_code == 200
    validate("ConversationDeletedResource", deleted.json())
    assert deleted.json() == {"id": created["id"], "object": "conversation.deleted", "deleted": True}
    missing = f"Conversation with id '{created['id']}' not found."
    for response in (api.get(path), api.post(path, {"metadata": {}}), api.delete(path), api.get(f"{path}/items"),
                     api.post(f"{path}/items", {"items": [_user("x")]}), api.get(f"{path}/items/msg_secret"),
                     api.delete(f"{path}/items/msg_secret")):
        assert response.status_code == 404
        assert response.json()["error"] == {"message": missing, "type": "invalid_request_error", "param": None,
                                            "code": "not_found"}
    # A turn cannot use it either.
    turn = api.create(model="gpt-test", input="hi", conversation=created["id"])
    assert turn.status_code == 404 and turn.json()["error"]["param"] == "conversation"


def test_other_methods_are_a_json_405(api: ApiClient):
    conversation = _create(api, items=[_user("x", id="msg_x")])["id"]
    for method, path, allowed in (
        ("get", "/v1/conversations", "POST"),
        ("put", f"/v1/conversations/{conversation}", "GET, POST, DELETE, HEAD"),
        ("delete", f"/v1/conversations/{conversation}/items", "GET, POST, HEAD"),
        ("post", f"/v1/conversations/{conversation}/items/msg_x", "GET, DELETE, HEAD"),
    ):
        response = getattr(api.client, method)(path)
        assert response.status_code == 405
        assert response["Allow"] == allowed and response.json()["error"]["code"] == "method_not_allowed"


# --- items -------------------------------------------------------------------------------------

def test_adding_items_appends_them_and_answers_with_the_added_items(api: ApiClient):
    conversation = _create(api, items=[_user("first")])["id"]
    path = f"/v1/conversations/{conversation}/items"
    response = api.post(f"{path}?include[]=message.output_text.logprobs", {"items": [_user("second"),
                                                                                      _user("third")]})
    assert response.status_code == 200
    added = response.json()
    validate("ConversationItemList", added)
    assert _texts(added) == ["second", "third"] and added["has_more"] is False
    assert (added["first_id"], added["last_id"]) == (added["data"][0]["id"], added["data"][1]["id"])
    assert _texts(_list(api, conversation, order="asc")) == ["first", "second", "third"]


def test_an_id_already_in_the_conversation_gets_a_new_one(api: ApiClient):
    conversation = _create(api, items=[_user("a", id="msg_a")])["id"]
    added = api.post(f"/v1/conversations/{conversation}/items", {"items": [_user("a again", id="msg_a")]}).json()
    assert added["data"][0]["id"] != "msg_a" and added["data"][0]["id"].startswith("msg_")
    assert [item["id"] for item in _list(api, conversation, order="asc")["data"]] == ["msg_a", added["first_id"]]


def test_an_item_reference_is_replaced_by_the_item_it_names(api: ApiClient):
    conversation = _create(api, items=[_user("quoted", id="msg_q"), _user("other", id="msg_o")])["id"]
    added = api.post(f"/v1/conversations/{conversation}/items",
                     {"items": [{"type": "item_reference", "id": "msg_q"}]}).json()
    validate("ConversationItemList", added)
    assert _texts(added) == ["quoted"] and added["first_id"] not in ("msg_q", "msg_o")
    missing = api.post(f"/v1/conversations/{conversation}/items",
                       {"items": [_user("x"), {"type": "item_reference", "id": "msg_nope"}]})
    assert missing.status_code == 400
    assert (missing.json()["error"]["param"], missing.json()["error"]["code"]) == ("items[1]", "item_not_found")


def test_listing_is_newest_first_by_default_and_pages_with_a_cursor(api: ApiClient):
    conversation = _create(api, items=[_user(f"m{i}") for i in range(5)])["id"]
    page = _list(api, conversation)
    assert _texts(page) == ["m4", "m3", "m2", "m1", "m0"] and page["has_more"] is False
    first = _list(api, conversation, limit=2, order="asc")
    assert _texts(first) == ["m0", "m1"] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (first["data"][0]["id"], first["data"][1]["id"])
    second = _list(api, conversation, limit=2, order="asc", after=first["last_id"])
    assert _texts(second) == ["m2", "m3"] and second["has_more"] is True
    third = _list(api, conversation, limit=2, order="asc", after=second["last_id"])
    assert _texts(third) == ["m4"] and third["has_more"] is False
    back = _list(api, conversation, limit=2, order="desc", after=third["last_id"])
    assert _texts(back) == ["m3", "m2"] and back["has_more"] is True
    assert _texts(_list(api, conversation, limit=100, include=["reasoning.encrypted_content"])) == _texts(page)


def test_an_item_is_retrieved_and_deleted_by_id(api: ApiClient):
    created = _create(api, items=[_user("keep", id="msg_keep"), _user("drop", id="msg_drop")])
    path = f"/v1/conversations/{created['id']}/items"
    item = api.get(f"{path}/msg_drop", **{"include[]": "message.input_image.image_url"})
    assert item.status_code == 200
    validate("ConversationItem", item.json())
    assert item.json()["content"][0]["text"] == "drop"
    deleted = api.delete(f"{path}/msg_drop")
    assert deleted.status_code == 200
    validate("Conversation", deleted.json())
    assert deleted.json() == created
    for response in (api.get(f"{path}/msg_drop"), api.delete(f"{path}/msg_drop")):
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Item with id 'msg_drop' not found."
    assert _texts(_list(api, created["id"])) == ["keep"]


def test_an_item_of_another_conversation_is_not_found_in_this_one(api: ApiClient):
    mine = _create(api, items=[_user("mine", id="msg_mine")])["id"]
    _create(api, items=[_user("theirs", id="msg_theirs")])
    for response in (api.get(f"/v1/conversations/{mine}/items/msg_theirs"),
                     api.delete(f"/v1/conversations/{mine}/items/msg_theirs")):
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Item with id 'msg_theirs' not found."
    assert Item.objects.filter(item_id="msg_theirs").count() == 1


# --- item shapes -------------------------------------------------------------------------------

EVERY_KIND: list[dict[str, Any]] = [
    {"role": "user", "content": "a string becomes an input_text part"},
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
        {"type": "input_file", "file_id": "file-123"}]},
    {"type": "message", "role": "developer", "content": "Be brief."},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "said"},
                                                         {"type": "refusal", "refusal": "no"}]},
    {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\": 1}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    {"type": "function_call_output", "call_id": "call_1", "output": [
        {"type": "input_text", "text": "as parts"}, {"type": "output_text", "text": "said by the tool"},
        {"type": "input_image", "image_url": "https://example.com/chart.png", "detail": "low"}]},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}], "encrypted_content": "gAAA"},
    {"type": "reasoning", "summary": []},
    {"type": "custom_tool_call", "call_id": "call_2", "name": "grep", "input": "TODO"},
    {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "output_text", "text": "3 hits"}]},
    {"type": "compaction", "encrypted_content": "opaque-upstream-blob"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
]


def test_every_kind_of_item_comes_back_as_a_conversation_item(api: ApiClient):
    conversation = _create(api, items=EVERY_KIND)["id"]
    page = _list(api, conversation, order="asc", limit=100)
    assert [item["type"] for item in page["data"]] == [item.get("type", "message") for item in EVERY_KIND]
    for item in page["data"]:
        validate("ConversationItem", item)
        fetched = api.get(f"/v1/conversations/{conversation}/items/{item['id']}").json()
        assert fetched == item
    by_type = {item["type"]: item for item in page["data"]}
    # A tool's output lists input parts only: the text of an output_text part is kept as input_text.
    assert page["data"][6]["output"][1] == {"type": "input_text", "text": "said by the tool"}
    assert by_type["custom_tool_call_output"]["output"] == [{"type": "input_text", "text": "3 hits"}]
    assert page["data"][3]["content"][0] == {"type": "output_text", "text": "said", "annotations": [], "logprobs": []}
    assert page["data"][1]["content"][1]["detail"] == "auto"
    assert page["data"][7]["encrypted_content"] == "gAAA"  # whatever `include` says
    assert by_type["web_search_call"] == EVERY_KIND[-1]  # a type kept verbatim comes back as sent


def test_a_turns_items_are_conversation_items_too(api: ApiClient, fake_openai: FakeOpenAI):
    conversation = _create(api, items=[_user("What is the weather in Paris?")])["id"]
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_w", "name": "weather", "arguments": "{\"c\": 1}"}]))
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}]
    first = api.create(model="gpt-test", input="Use the tool.", conversation=conversation, tools=tools)
    assert first.status_code == 200
    fake_openai.script(Reply(text="Sunny."))
    second = api.create(model="gpt-test", conversation=conversation, tools=tools,
                        input=[{"type": "function_call_output", "call_id": "call_w", "output": "sunny"}])
    assert second.status_code == 200
    page = _list(api, conversation, order="asc")
    assert [item["type"] for item in page["data"]] == ["message", "message", "function_call",
                                                       "function_call_output", "message"]
    for item in page["data"]:
        validate("ConversationItem", item)
    assert page["data"][-1]["content"][0]["text"] == "Sunny."


# --- storage -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "queries", "count"), [
    ({}, 2, 20), ({"order": "asc"}, 2, 20), ({"after": "msg_30"}, 3, 20),
    ({"after": "msg_30", "order": "asc", "limit": 100}, 3, 29)])
def test_listing_items_is_a_bounded_number_of_indexed_queries(api: ApiClient, django_assert_num_queries: Any,
                                                               params: dict[str, Any], queries: int, count: int):
    conversation = _create(api)["id"]
    for start in range(0, 60, 20):
        api.post(f"/v1/conversations/{conversation}/items",
                 {"items": [_user(f"m{i}", id=f"msg_{i}") for i in range(start, start + 20)]})
    with CaptureQueriesContext(connection) as captured, django_assert_num_queries(queries):
        page = _list(api, conversation, **params)
    assert len(page["data"]) == count
    sql = [query["sql"] for query in captured.captured_queries]
    assert not any("OFFSET" in statement.upper() for statement in sql)
    # The page is read through the (conversation, seq) index, one row more than asked for.
    listing = sql[-1]
    assert re.search(r'ORDER BY "conversations_app_conversationitem"\."seq" (ASC|DESC)', listing)
    assert f"LIMIT {params.get('limit', 20) + 1}" in listing


def test_deleting_a_conversation_removes_its_rows_in_the_background(transactional_db: None, gateway: GatewayConfig,
                                                                    monkeypatch: pytest.MonkeyPatch):
    api = ApiClient()
    conversation = _create(api, items=[_user(f"m{i}") for i in range(5)])["id"]
    assert api.create(model="gpt-test", input="a turn", conversation=conversation).status_code == 200
    kept = _create(api, items=[_user("kept")])["id"]
    threads: list[Any] = []
    start = concurrency.start
    monkeypatch.setattr(concurrency, "start", lambda *args, **kw: threads.append(start(*args, **kw)))
    assert api.delete(f"/v1/conversations/{conversation}").status_code == 200
    assert len(threads) == 1 and threads[0].join(10)
    assert not Conversation.objects.filter(pk=conversation).exists()
    assert not ConversationItem.objects.filter(conversation_id=conversation).exists()
    assert not StoredResponse.objects.filter(conversation_id=conversation).exists()
    assert Item.objects.count() == 1 and _texts(_list(api, kept)) == ["kept"]
