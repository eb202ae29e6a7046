"""The auth middleware: who may call what, and what a refused caller is (not) told."""

from __future__ import annotations

import pytest

from identity_app.keys import revoke
from tests.identity.conftest import GatewayClient

pytestmark = pytest.mark.django_db

UNAUTHORIZED = {"error": {
    "message": "Incorrect API key provided. Pass a valid gateway API key or OIDC token as "
               "'Authorization: Bearer <token>' (or a key as 'x-api-key: <key>').",
    "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
}}


@pytest.fixture
def auth_on(configure):
    return configure(auth={"enabled": True})


@pytest.mark.parametrize("header", [None, "Bearer", "Basic Zm9vOmJhcg==", "Bearer gwk_deadbeef_nope",
                                    "Bearer sk-something-else", "Bearer eyJhbGciOiJub25lIn0.e30."])
def test_anything_but_a_valid_credential_gets_the_same_401(auth_on, header):
    client = GatewayClient()
    headers = {"Authorization": header} if header else {}
    for response in (client.create(model="demo", input="hi", headers=headers),
                     client.get("/v1/responses/resp_x", headers=headers),
                     client.get("/v1/models", headers=headers),
                     client.get("/v1/nope", headers=headers)):
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
        assert response["x-should-retry"] == "false"


def test_a_valid_key_is_served_and_owns_what_it_creates(auth_on, make_key):
    issued = make_key(owner="acme")
    response = GatewayClient(issued.key).create(model="demo", input="hi")
    assert response.status_code == 200, response.content
    from conversations_app.models import StoredResponse

    assert StoredResponse.objects.get(pk=response.json()["id"]).owner == "acme"


def test_a_revoked_key_gets_401_on_its_next_request(auth_on, make_key):
    issued = make_key()
    client = GatewayClient(issued.key)
    assert client.get("/v1/models").status_code == 200
    revoke(issued.record)
    response = client.get("/v1/models")
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


def test_probes_and_admin_are_not_behind_api_auth(auth_on):
    client = GatewayClient()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    assert client.get("/admin/login/").status_code == 200


def test_allowed_models_answer_like_an_unknown_model(auth_on, make_key):
    limited = GatewayClient(make_key(allowed_models=["demo"]).key)
    assert limited.create(model="demo", input="hi").status_code == 200
    refused = limited.create(model="gpt-test", input="hi")
    unknown = GatewayClient(make_key().key).create(model="no-such-model", input="hi")
    assert refused.status_code == unknown.status_code == 400
    assert refused.json() == {"error": {
        "message": "The model 'gpt-test' does not exist or is not served by this gateway.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    assert unknown.json()["error"]["message"] == (
        "The model 'no-such-model' does not exist or is not served by this gateway.")


def test_auth_disabled_is_the_anonymous_dev_mode(configure):
    configure()
    response = GatewayClient().create(model="demo", input="hi")
    assert response.status_code == 200
    from conversations_app.models import StoredResponse

    assert StoredResponse.objects.get(pk=response.json()["id"]).owner == ""


def test_metrics_path_token_guard(configure):
    configure(auth={"enabled": False, "metrics": {"bearer_token": "scrape-secret"}},
              observability={"metrics": {"path": "/internal/metrics"}})
    assert GatewayClient().get("/internal/metrics").status_code == 401
    assert GatewayClient("wrong").get("/internal/metrics").status_code == 401
    assert GatewayClient("scrape-secret").get("/internal/metrics").status_code not in (401, 403)
    # The guard is for the metrics path only; the API stays in dev mode.
    assert GatewayClient().get("/v1/models").status_code == 200


def test_metrics_path_network_guard(configure):
    configure(auth={"enabled": True, "metrics": {"allowed_networks": ["10.1.0.0/16"]}},
              rate_limit={"trusted_proxies": ["127.0.0.1/32"]})
    assert GatewayClient(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code not in (401, 403)
    assert GatewayClient(REMOTE_ADDR="10.2.0.1").get("/metrics").status_code == 403
    # Through a trusted proxy, the forwarded client address is what counts.
    via_proxy = GatewayClient(REMOTE_ADDR="127.0.0.1")
    assert via_proxy.get("/metrics", headers={"X-Forwarded-For": "10.1.9.9"}).status_code not in (401, 403)
    assert via_proxy.get("/metrics", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 403
    # Metrics is not behind API auth: no API key needed from an allowed network.
    assert GatewayClient(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code != 401


def test_the_model_list_shows_only_allowed_models(auth_on, make_key):
    limited = GatewayClient(make_key(allowed_models=["demo"]).key).get("/v1/models").json()
    everything = GatewayClient(make_key().key).get("/v1/models").json()
    assert [m["id"] for m in limited["data"]] == ["demo"]
    assert {m["id"] for m in everything["data"]} == {"demo", "gpt-test"}


def _aliased(configure):
    return configure(auth={"enabled": True}, models=[
        {"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini-upstream", "aliases": ["fast"],
         "fallbacks": ["backup"]},
        {"name": "backup", "provider": "openai", "provider_model_id": "backup-upstream"},
        {"name": "demo", "provider": "demo"},
    ])


def test_the_allow_list_applies_to_what_is_served_aliases_included(configure, make_key, fake_openai):
    _aliased(configure)
    by_name = GatewayClient(make_key(allowed_models=["gpt-test"]).key)
    by_alias = GatewayClient(make_key(allowed_models=["fast"]).key)
    for client, model in ((by_name, "fast"), (by_alias, "gpt-test"), (by_alias, "fast")):
        assert client.create(model=model, input="hi").status_code == 200, (model, client)
    assert by_name.create(model="demo", input="hi").status_code == 400


def test_a_fallback_the_key_may_not_use_is_skipped(configure, make_key, fake_openai):
    from tests.fakes.openai_upstream import Fail

    _aliased(configure)
    primary_only = GatewayClient(make_key(allowed_models=["gpt-test"]).key)
    fake_openai.script(Fail(500))
    assert primary_only.create(model="gpt-test", input="hi").status_code == 502
    assert [r.json["model"] for r in fake_openai.requests] == ["gpt-4o-mini-upstream"]  # backup never asked
    both = GatewayClient(make_key(allowed_models=["gpt-test", "backup"]).key)
    fake_openai.reset()
    fake_openai.script(Fail(500))
    assert both.create(model="gpt-test", input="hi").status_code == 200
    assert [r.json["model"] for r in fake_openai.requests] == ["gpt-4o-mini-upstream", "backup-upstream"]


def test_models_by_name_and_alias_follow_the_allow_list(configure, make_key):
    _aliased(configure)
    by_alias = GatewayClient(make_key(allowed_models=["fast"]).key)
    listed = [m["id"] for m in by_alias.get("/v1/models").json()["data"]]
    assert listed == ["gpt-test", "fast"]  # an allowed model's aliases are the same model
    for name in ("gpt-test", "fast"):
        assert by_alias.get(f"/v1/models/{name}").json()["id"] == name
    for name in ("backup", "demo", "nope"):  # not allowed answers like unknown
        response = by_alias.get(f"/v1/models/{name}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert GatewayClient().get("/v1/models/demo").status_code == 401


def test_input_tokens_follow_the_allow_list(configure, make_key):
    _aliased(configure)
    limited = GatewayClient(make_key(allowed_models=["demo"]).key)
    assert limited.client.post("/v1/responses/input_tokens", data='{"model": "demo", "input": "hi"}',
                               content_type="application/json").status_code == 200
    refused = limited.client.post("/v1/responses/input_tokens", data='{"model": "fast", "input": "hi"}',
                                  content_type="application/json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_found"
    assert GatewayClient().client.post("/v1/responses/input_tokens", data='{"model": "demo", "input": "hi"}',
                                       content_type="application/json").status_code == 401
