"""Tenant isolation on the Conversations API: another owner's conversation answers exactly as one
that does not exist, on every route, and nothing another owner sends changes it. The Conversations
routes are charged to the rate limits like every other route that runs no turn."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.models import Conversation, ConversationItem, Item
from tests.identity.conftest import GatewayClient

pytestmark = pytest.mark.django_db

MISSING = "conv_0000000000000000000000000000000000000000000000000"


def _post(client: GatewayClient, path: str, body: Any) -> Any:
    return client.client.post(path, data=json.dumps(body), content_type="application/json")


def _user(text: str, item_id: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "id": item_id, "content": [{"type": "input_text", "text": text}]}


def _state() -> tuple[Any, ...]:
    return (list(Conversation.objects.order_by("pk").values_list("pk", "metadata", "next_item_seq", "deleted_at",
                                                                  "updated_at")),
            ConversationItem.objects.count(), Item.objects.count())


@pytest.fixture
def alices(tenants: dict[str, GatewayClient]) -> str:
    body = _post(tenants["alice"], "/v1/conversations",
                 {"items": [_user("alice's secret", "msg_secret")], "metadata": {"owner": "alice"}})
    assert body.status_code == 200
    return str(body.json()["id"])


def _requests(conversation_id: str) -> dict[str, Any]:
    """Every route of the API on one conversation, as (method, path, body)."""
    path = f"/v1/conversations/{conversation_id}"
    return {
        "retrieve": ("get", path, None),
        "update": ("post", path, {"metadata": {"owner": "bob"}}),
        "list items": ("get", f"{path}/items", None),
        "list items after": ("get", f"{path}/items?after=msg_secret", None),
        "add items": ("post", f"{path}/items", {"items": [_user("bob was here", "msg_bob")]}),
        "retrieve item": ("get", f"{path}/items/msg_secret", None),
        "delete item": ("delete", f"{path}/items/msg_secret", None),
        "delete": ("delete", path, None),
    }


def _send(client: GatewayClient, method: str, path: str, body: Any) -> Any:
    if method == "post":
        return _post(client, path, body)
    return getattr(client.client, method)(path)


@pytest.mark.parametrize("route", list(_requests(MISSING)))
def test_another_owners_conversation_is_404_like_a_missing_one_and_unchanged(tenants: dict[str, GatewayClient],
                                                                            alices: str, route: str):
    before = _state()
    theirs = _send(tenants["bob"], *_requests(alices)[route])
    missing = _send(tenants["bob"], *_requests(MISSING)[route])
    assert theirs.status_code == missing.status_code == 404
    assert json.loads(theirs.content.decode().replace(alices, MISSING)) == missing.json()
    assert _state() == before
    # The owner is a tenant: another key of the same owner sees it, unchanged.
    assert tenants["alice2"].get(f"/v1/conversations/{alices}").json()["metadata"] == {"owner": "alice"}
    assert tenants["alice2"].get(f"/v1/conversations/{alices}/items/msg_secret").status_code == 200


def test_every_route_works_for_another_key_of_the_same_owner(tenants: dict[str, GatewayClient], alices: str):
    same = tenants["alice2"]
    for route, (method, path, body) in _requests(alices).items():
        if route == "delete item":
            path = path.replace("msg_secret", "msg_bob")
        response = _send(same, method, path, body)
        assert response.status_code == 200, (route, response.content)
    assert same.get(f"/v1/conversations/{alices}").status_code == 404  # deleted last


def test_an_item_of_another_owners_conversation_is_no_cursor_or_item_in_ones_own(tenants: dict[str, GatewayClient],
                                                                               alices: str):
    bobs = _post(tenants["bob"], "/v1/conversations", {"items": [_user("bob's", "msg_bobs")]}).json()["id"]
    cursor = tenants["bob"].get(f"/v1/conversations/{bobs}/items", after="msg_secret")
    assert cursor.status_code == 400 and cursor.json()["error"]["param"] == "after"
    assert tenants["bob"].get(f"/v1/conversations/{bobs}/items/msg_secret").status_code == 404
    reference = _post(tenants["bob"], f"/v1/conversations/{bobs}/items",
                      {"items": [{"type": "item_reference", "id": "msg_secret"}]})
    assert reference.status_code == 400 and reference.json()["error"]["code"] == "item_not_found"


def test_a_turn_cannot_use_another_owners_conversation(tenants: dict[str, GatewayClient], alices: str):
    before = _state()
    theirs = tenants["bob"].create(model="demo", input="what did alice say?", conversation=alices)
    missing = tenants["bob"].create(model="demo", input="what did alice say?", conversation=MISSING)
    assert theirs.status_code == missing.status_code == 404
    assert json.loads(theirs.content.decode().replace(alices, MISSING)) == missing.json()
    assert _state() == before


def test_without_a_key_nothing_is_reachable(tenants: dict[str, GatewayClient], alices: str):
    anonymous = GatewayClient()
    for method, path, body in _requests(alices).values():
        assert _send(anonymous, method, path, body).status_code == 401
    assert _post(anonymous, "/v1/conversations", {}).status_code == 401


def test_the_routes_are_charged_one_request_each(configure: Any, make_key: Any, redis_prefix: str, settings: Any):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    configure(auth={"enabled": True}, rate_limit={"enabled": True, "redis_key_prefix": redis_prefix,
                                                  "requests_per_minute": 4, "tokens_per_minute": 1000})
    client = GatewayClient(make_key(owner="acme").key)
    created = _post(client, "/v1/conversations", {"items": [_user("x" * 8000, "msg_big")]})
    assert created.status_code == 200 and created["x-ratelimit-remaining-requests"] == "3"
    # A body of ~2,000 tokens costs no tokens: nothing is generated.
    assert created["x-ratelimit-remaining-tokens"] == "1000"
    conversation = created.json()["id"]
    assert client.get(f"/v1/conversations/{conversation}/items")["x-ratelimit-remaining-requests"] == "2"
    assert client.get(f"/v1/conversations/{MISSING}")["x-ratelimit-remaining-requests"] == "1"
    assert client.get(f"/v1/conversations/{conversation}")["x-ratelimit-remaining-requests"] == "0"
    refused = client.delete(f"/v1/conversations/{conversation}")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert Conversation.objects.get(pk=conversation).deleted_at is None
