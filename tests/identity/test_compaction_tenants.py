"""Compaction and tenants: a compact request reads only its owner's chain, and a compaction item the
gateway sealed for one tenant is refused to every other, exactly like a tampered one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.models import StoredResponse
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.identity.conftest import GatewayClient

pytestmark = pytest.mark.django_db


def compact(client: GatewayClient, **body: Any) -> Any:
    return client.client.post("/v1/responses/compact", data=json.dumps(body), content_type="application/json")


def test_compact_without_a_key_is_refused(tenants):
    assert compact(GatewayClient(), model="gpt-test", input="hi").status_code == 401


def test_another_tenants_previous_response_is_not_found(tenants, fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="Noted."), Reply(text="A summary."))
    first = tenants["alice"].create(model="gpt-test", input="My secret is 42.").json()
    refused = compact(tenants["bob"], model="gpt-test", previous_response_id=first["id"])
    missing = compact(tenants["bob"], model="gpt-test", previous_response_id="resp_missing")
    assert refused.status_code == missing.status_code == 400
    assert refused.json()["error"]["code"] == missing.json()["error"]["code"] == "previous_response_not_found"
    assert len(fake_openai.requests) == 1  # bob's compaction never reached the upstream
    # The owner's other key may.
    assert compact(tenants["alice2"], model="gpt-test", previous_response_id=first["id"]).status_code == 200


def test_an_item_sealed_for_one_tenant_is_refused_to_another(tenants, fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="Alice's secret is 42."))
    output = compact(tenants["alice"], model="gpt-test", input="My secret is 42.").json()["output"]
    rows = StoredResponse.objects.count()
    for path in ("/v1/responses", "/v1/responses/compact"):
        refused = tenants["bob"].client.post(path, data=json.dumps({"model": "gpt-test", "input": output}),
                                             content_type="application/json")
        assert refused.status_code == 400, refused.content
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("input[1]", "invalid_encrypted_content")
        assert "42" not in refused.content.decode()
    assert StoredResponse.objects.count() == rows and len(fake_openai.requests) == 1
    # The same owner's other key opens it: the item belongs to the tenant, not to one key.
    fake_openai.script(Reply(text="ok"))
    assert tenants["alice2"].create(model="gpt-test", input=output).status_code == 200
    assert "Alice's secret is 42." in json.dumps(fake_openai.last.json)
