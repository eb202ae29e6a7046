"""Bad input on the Conversations API: each gets its documented error, and nothing is written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.models import Conversation, ConversationItem, Item
from tests.conftest import ApiClient
from tests.contract import validate_against_spec

pytestmark = pytest.mark.django_db

MISSING = "conv_0000000000000000000000000000000000000000000000000"


def _user(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}


def _state() -> tuple[Any, ...]:
    """Everything a request could have written."""
    return (list(Conversation.objects.order_by("pk").values_list("pk", "metadata", "next_item_seq", "deleted_at")),
            ConversationItem.objects.count(), Item.objects.count())


@pytest.fixture
def conversation(api: ApiClient) -> str:
    body = api.post("/v1/conversations", {"items": [_user("first", id="msg_first")], "metadata": {"k": "v"}})
    return str(body.json()["id"])


def _error(response: Any, status: int, param: str | None, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code), error
    assert response["x-should-retry"] == "false"
    validate_against_spec("ErrorResponse", response.json())
    return dict(error)


def test_an_unknown_conversation_is_404_on_every_route(api: ApiClient):
    before = _state()
    path = f"/v1/conversations/{MISSING}"
    for response in (api.get(path), api.post(path, {"metadata": {"a": "b"}}), api.delete(path),
                     api.get(f"{path}/items"), api.get(f"{path}/items", after="msg_first"),
                     api.post(f"{path}/items", {"items": [_user("x")]}), api.get(f"{path}/items/msg_first"),
                     api.delete(f"{path}/items/msg_first"), api.get("/v1/conversations/" + "x" * 300),
                     api.get("/v1/conversations/conv%00x/items")):
        error = _error(response, 404, None, "not_found")
        assert error["message"].startswith("Conversation with id ")
    assert _state() == before


def test_a_chains_conversation_is_not_one_of_the_api(api: ApiClient):
    api.create(model="gpt-test", input="a chain")
    chain = Conversation.objects.get(kind="chain").pk
    _error(api.get(f"/v1/conversations/{chain}"), 404, None, "not_found")
    _error(api.get(f"/v1/conversations/{chain}/items"), 404, None, "not_found")


@pytest.mark.parametrize("route", ["create", "add"])
def test_more_than_20_items_is_refused_and_writes_nothing(api: ApiClient, conversation: str, route: str):
    before = _state()
    body = {"items": [_user(f"m{i}") for i in range(21)]}
    path = "/v1/conversations" if route == "create" else f"/v1/conversations/{conversation}/items"
    error = _error(api.post(path, body), 400, "items", "array_above_max_length")
    assert error["message"] == ("Invalid 'items': array too long. Expected an array with maximum length 20, but got "
                                "an array with length 21 instead.")
    assert _state() == before
    body["items"] = body["items"][:20]
    assert api.post(path, body).status_code == 200


@pytest.mark.parametrize("route", ["create", "add"])
def test_a_body_over_the_size_limit_is_a_413_and_writes_nothing(api: ApiClient, conversation: str, route: str):
    before = _state()
    body = {"items": [_user("x" * 70_000)]}
    path = "/v1/conversations" if route == "create" else f"/v1/conversations/{conversation}/items"
    response = api.post(path, body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert _state() == before


METADATA_CASES = [
    ({f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties"),
    ({"k" * 65: "v"}, "metadata", "string_above_max_length"),
    ({"topic": "v" * 513}, "metadata.topic", "string_above_max_length"),
    ({"topic": 3}, "metadata.topic", "invalid_type"),
    ({"topic": None}, "metadata.topic", "invalid_type"),
    ("tags", "metadata", "invalid_type"),
    (["a"], "metadata", "invalid_type"),
]


@pytest.mark.parametrize(("metadata", "param", "code"), METADATA_CASES)
@pytest.mark.parametrize("route", ["create", "update"])
def test_bad_metadata_is_refused_and_writes_nothing(api: ApiClient, conversation: str, route: str, metadata: Any,
                                                    param: str, code: str):
    before = _state()
    path = "/v1/conversations" if route == "create" else f"/v1/conversations/{conversation}"
    _error(api.post(path, {"metadata": metadata}), 400, param, code)
    assert _state() == before


def test_metadata_at_the_limits_is_accepted(api: ApiClient):
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    body = api.post("/v1/conversations", {"metadata": metadata})
    assert body.status_code == 200 and body.json()["metadata"] == metadata


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"items": [_user("x")], "model": "gpt-test"}, "model", "unknown_parameter"),
    ({"items": "hello"}, "items", "invalid_type"),
    ({"items": [_user("ok"), {"type": "message", "role": "user", "content": 5}]}, "items[1].content", "invalid_type"),
    ({"items": [{"type": "message", "role": "robot", "content": "x"}]}, "items[0].role", "invalid_value"),
    ({"items": [{"type": "function_call_output", "output": "x"}]}, "items[0].call_id", "missing_required_parameter"),
    ({"items": [{"content": "no role, no type"}]}, "items[0]", "invalid_value"),
    ({"items": [_user("x", id="m" * 101)]}, "items[0].id", "invalid_value"),
    ({"items": [{"type": "t" * 41, "id": "x1"}]}, "items[0].type", "invalid_value"),
    ({"items": [_user("nul \u0000")]}, "items[0].content[0].text", "invalid_value"),
    ({"items": [{"type": "item_reference", "id": "msg_first"}]}, "items[0]", "item_not_found"),
])
def test_bad_items_on_create_are_refused_and_write_nothing(api: ApiClient, conversation: str, body: dict[str, Any],
                                                           param: str, code: str):
    before = _state()
    _error(api.post("/v1/conversations", body), 400, param, code)
    assert _state() == before


@pytest.mark.parametrize(("body", "param", "code"), [
    ({}, "items", "missing_required_parameter"),
    ({"items": None}, "items", "missing_required_parameter"),
    ({"items": []}, "items", "empty_array"),
    ({"items": [_user("x")], "metadata": {}}, "metadata", "unknown_parameter"),
    ({"items": [_user("ok"), {"type": "reasoning", "summary": "no"}]}, "items[1].summary", "invalid_type"),
    ({"items": [{"type": "item_reference", "id": "msg_nope"}]}, "items[0]", "item_not_found"),
])
def test_bad_items_on_add_are_refused_and_write_nothing(api: ApiClient, conversation: str, body: dict[str, Any],
                                                        param: str, code: str):
    before = _state()
    _error(api.post(f"/v1/conversations/{conversation}/items", body), 400, param, code)
    assert _state() == before


@pytest.mark.parametrize("path", ["/v1/conversations", "{conversation}", "{conversation}/items"])
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"text"', b'{"items": [1e999]}'])
def test_a_body_that_is_not_a_json_object_is_a_400(api: ApiClient, conversation: str, path: str, body: bytes):
    before = _state()
    url = path if path.startswith("/") else f"/v1/conversations/{path.format(conversation=conversation)}"
    response = api.post(url, body)
    assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid_json", "invalid_value")
    assert _state() == before


def test_update_needs_metadata(api: ApiClient, conversation: str):
    before = _state()
    _error(api.post(f"/v1/conversations/{conversation}", {}), 400, "metadata", "missing_required_parameter")
    _error(api.post(f"/v1/conversations/{conversation}", {"metadata": {}, "items": []}), 400, "items",
           "unknown_parameter")
    assert _state() == before


@pytest.mark.parametrize("after", ["msg_nope", "not an id at all", "x" * 101, "msg_first\u0000"])
def test_a_malformed_or_unknown_cursor_is_a_400(api: ApiClient, conversation: str, after: str):
    error = _error(api.get(f"/v1/conversations/{conversation}/items", after=after), 400, "after", "invalid_value")
    assert error["message"] == "Invalid value for 'after': no such item in this conversation."


def test_an_item_of_another_conversation_is_not_a_cursor_here(api: ApiClient, conversation: str):
    other = api.post("/v1/conversations", {"items": [_user("other", id="msg_other")]}).json()["id"]
    _error(api.get(f"/v1/conversations/{conversation}/items", after="msg_other"), 400, "after", "invalid_value")
    assert api.get(f"/v1/conversations/{other}/items", after="msg_other").status_code == 200


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"), ({"limit": "²"}, "limit"),
    ({"limit": "9" * 5000}, "limit"), ({"order": "newest"}, "order"),
])
def test_bad_paging_parameters_are_a_400(api: ApiClient, conversation: str, params: dict[str, str], param: str):
    _error(api.get(f"/v1/conversations/{conversation}/items", **params), 400, param, "invalid_value")


def test_a_foreign_or_unknown_item_id_is_404_and_deletes_nothing(api: ApiClient, conversation: str):
    api.post("/v1/conversations", {"items": [_user("other", id="msg_other")]})
    before = _state()
    for item_id in ("msg_other", "msg_nope", "x" * 101):
        for response in (api.get(f"/v1/conversations/{conversation}/items/{item_id}"),
                         api.delete(f"/v1/conversations/{conversation}/items/{item_id}")):
            error = _error(response, 404, None, "not_found")
            assert error["message"] == f"Item with id '{item_id}' not found."
    assert _state() == before


def test_errors_have_the_openai_shape(api: ApiClient):
    response = api.post("/v1/conversations", json.dumps({"metadata": {"k": 1}}))
    assert response.json() == {"error": {
        "message": "Invalid type for 'metadata.k': expected a string, but got an integer instead.",
        "type": "invalid_request_error", "param": "metadata.k", "code": "invalid_type"}}
