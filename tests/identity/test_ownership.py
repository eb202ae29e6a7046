"""Tenant isolation: another owner's response is indistinguishable from one that does not exist."""

from __future__ import annotations

import json

import pytest

from tests.conftest import sse_events

pytestmark = pytest.mark.django_db

MISSING = "resp_0000000000000000000000000000000000000000000000000"


def _same_as_missing(response, missing, real_id):
    """Status and body equal to the nonexistent id's, once the id in the message is swapped."""
    assert response.status_code == missing.status_code
    assert json.loads(response.content.decode().replace(real_id, MISSING)) == missing.json()


@pytest.fixture
def alices_response(tenants):
    first = tenants["alice"].create(model="demo", input="secret one").json()
    second = tenants["alice"].create(model="demo", input="secret two", previous_response_id=first["id"]).json()
    return second


def test_get_is_404_for_another_owner(tenants, alices_response):
    rid = alices_response["id"]
    _same_as_missing(tenants["bob"].get(f"/v1/responses/{rid}"), tenants["bob"].get(f"/v1/responses/{MISSING}"), rid)
    assert tenants["bob"].get(f"/v1/responses/{rid}").status_code == 404
    # The owner is a tenant: another key of the same owner sees it.
    assert tenants["alice2"].get(f"/v1/responses/{rid}").json() == alices_response


def test_input_items_are_404_for_another_owner(tenants, alices_response):
    rid = alices_response["id"]
    path = f"/v1/responses/{rid}/input_items"
    _same_as_missing(tenants["bob"].get(path), tenants["bob"].get(f"/v1/responses/{MISSING}/input_items"), rid)
    assert tenants["bob"].get(path).status_code == 404
    assert tenants["alice"].get(path).status_code == 200


def test_delete_is_404_for_another_owner_and_deletes_nothing(tenants, alices_response):
    rid = alices_response["id"]
    _same_as_missing(tenants["bob"].delete(f"/v1/responses/{rid}"),
                     tenants["bob"].delete(f"/v1/responses/{MISSING}"), rid)
    assert tenants["bob"].delete(f"/v1/responses/{rid}").status_code == 404
    assert tenants["alice"].get(f"/v1/responses/{rid}").status_code == 200
    assert tenants["alice"].delete(f"/v1/responses/{rid}").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_of_another_owner_is_not_found(tenants, alices_response, stream):
    rid = alices_response["id"]
    theirs = tenants["bob"].create(model="demo", input="what did they say?", previous_response_id=rid, stream=stream)
    missing = tenants["bob"].create(model="demo", input="x", previous_response_id=MISSING, stream=stream)
    assert theirs.status_code == 400
    assert theirs.json()["error"]["code"] == "previous_response_not_found"
    _same_as_missing(theirs, missing, rid)
    # Nothing of the chain leaked into a stored turn either.
    assert tenants["bob"].create(model="demo", input="fresh").status_code == 200


def test_streamed_responses_belong_to_their_creator(tenants):
    response = tenants["alice"].create(model="demo", input="streamed secret", stream=True)
    events = sse_events(response)
    rid = events[-1]["response"]["id"]
    assert events[-1]["type"] == "response.completed"
    assert tenants["bob"].get(f"/v1/responses/{rid}").status_code == 404
    assert tenants["alice"].get(f"/v1/responses/{rid}").status_code == 200
    follow = tenants["alice"].create(model="demo", input="and?", previous_response_id=rid)
    assert follow.status_code == 200


def test_a_chain_continued_by_its_owner_stays_private(tenants, alices_response):
    third = tenants["alice"].create(model="demo", input="three", previous_response_id=alices_response["id"]).json()
    for path in (f"/v1/responses/{third['id']}", f"/v1/responses/{third['id']}/input_items"):
        assert tenants["bob"].get(path).status_code == 404
        assert tenants["alice2"].get(path).status_code == 200


def test_a_replay_is_404_for_another_owner(tenants, alices_response):
    rid = alices_response["id"]
    theirs = tenants["bob"].get(f"/v1/responses/{rid}", stream="true")
    _same_as_missing(theirs, tenants["bob"].get(f"/v1/responses/{MISSING}", stream="true"), rid)
    events = sse_events(tenants["alice2"].get(f"/v1/responses/{rid}", stream="true"))
    assert events[-1]["response"] == alices_response


def test_input_tokens_count_only_the_callers_own_chain(tenants, alices_response):
    def count(client, previous):
        return client.client.post("/v1/responses/input_tokens", content_type="application/json",
                                  data=json.dumps({"model": "demo", "input": "x", "previous_response_id": previous}))

    rid = alices_response["id"]
    theirs, missing = count(tenants["bob"], rid), count(tenants["bob"], MISSING)
    assert theirs.status_code == 400 and theirs.json()["error"]["code"] == "previous_response_not_found"
    _same_as_missing(theirs, missing, rid)
    assert count(tenants["alice2"], rid).status_code == 200
