"""GET/DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items."""

from __future__ import annotations

import pytest

from tests.contract import validate


def _with_items(api, count):
    return api.create(model="gpt-test", input=[{"role": "user", "content": f"m{i}"} for i in range(count)]).json()


def test_retrieve_returns_the_created_object(api):
    body = api.create(model="gpt-test", input="hi", metadata={"a": "b"}).json()
    fetched = api.get(f"/v1/responses/{body['id']}")
    assert fetched.status_code == 200
    validate("Response", fetched.json())
    assert fetched.json() == body


def test_unknown_ids_are_404_on_every_route(api):
    for path in ("/v1/responses/resp_nope", "/v1/responses/resp_nope/input_items"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Response with id 'resp_nope' not found."
    assert api.delete("/v1/responses/resp_nope").status_code == 404


def test_delete_removes_it_from_the_api(api):
    body = api.create(model="gpt-test", input="bye").json()
    response = api.delete(f"/v1/responses/{body['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert api.get(f"/v1/responses/{body['id']}").status_code == 404
    assert api.delete(f"/v1/responses/{body['id']}").status_code == 404


def test_input_items_are_newest_first_by_default(api):
    body = _with_items(api, 3)
    page = api.get(f"/v1/responses/{body['id']}/input_items").json()
    validate("ResponseItemList", page)
    assert [i["content"][0]["text"] for i in page["data"]] == ["m2", "m1", "m0"]
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    assert page["has_more"] is False
    assert all(i["type"] == "message" and i["role"] == "user" and i["status"] == "completed" for i in page["data"])


def test_input_items_paginate_with_a_stable_cursor(api):
    body = _with_items(api, 5)
    path = f"/v1/responses/{body['id']}/input_items"
    first = api.get(path, limit=2, order="asc").json()
    assert [i["content"][0]["text"] for i in first["data"]] == ["m0", "m1"] and first["has_more"]
    second = api.get(path, limit=2, order="asc", after=first["last_id"]).json()
    assert [i["content"][0]["text"] for i in second["data"]] == ["m2", "m3"] and second["has_more"]
    third = api.get(path, limit=2, order="asc", after=second["last_id"]).json()
    assert [i["content"][0]["text"] for i in third["data"]] == ["m4"] and not third["has_more"]
    again = api.get(path, limit=2, order="asc").json()
    assert again["data"] == first["data"]  # ids are stable across reads
    desc = api.get(path, limit=2, order="desc", after=first["data"][1]["id"]).json()
    assert [i["content"][0]["text"] for i in desc["data"]] == ["m0"]


def test_input_items_are_only_the_requests_own(api):
    first = api.create(model="gpt-test", input="first").json()
    second = api.create(model="gpt-test", input="second", previous_response_id=first["id"]).json()
    data = api.get(f"/v1/responses/{second['id']}/input_items").json()["data"]
    assert [i["content"][0]["text"] for i in data] == ["second"]


def test_input_items_reject_bad_paging_parameters(api):
    body = _with_items(api, 1)
    path = f"/v1/responses/{body['id']}/input_items"
    for params, param in (({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"order": "up"}, "order"), ({"after": "msg_unknown"}, "after")):
        response = api.get(path, **params)
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("limit", ["\u00b2", "1\u00b2", "\u2460", "\u0661", "9" * 5000, "0" * 4999 + "5"])
def test_a_limit_that_is_not_plain_ascii_digits_is_a_400_not_a_500(api, limit):
    # Found by tests/fuzz: str.isdigit() accepts '²' (int() does not), and int() refuses 4,300+ digits.
    body = _with_items(api, 1)
    response = api.get(f"/v1/responses/{body['id']}/input_items", limit=limit)
    assert response.status_code == 400, response.content
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("limit", "invalid_value")


def test_function_call_items_keep_their_ids(api):
    body = api.create(model="gpt-test", input=[
        {"type": "function_call", "id": "fc_client", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"role": "user", "content": "go on"},
    ]).json()
    data = api.get(f"/v1/responses/{body['id']}/input_items", order="asc").json()
    validate("ResponseItemList", data)
    assert data["data"][0]["id"] == "fc_client"
    assert data["data"][1]["type"] == "function_call_output" and data["data"][1]["id"].startswith("fco_")


@pytest.mark.parametrize("response_id", ["resp_%00abc", "resp_" + "a" * 5000, "%00"])
def test_ids_no_row_can_have_are_not_found_not_a_database_error(api, response_id):
    for response in (api.get(f"/v1/responses/{response_id}"), api.delete(f"/v1/responses/{response_id}"),
                     api.get(f"/v1/responses/{response_id}/input_items")):
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"


def test_an_after_cursor_no_item_can_have_is_a_400(api):
    created = api.create(model="gpt-test", input="hi").json()
    response = api.get(f"/v1/responses/{created['id']}/input_items", after="msg_\x00x")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "after"
