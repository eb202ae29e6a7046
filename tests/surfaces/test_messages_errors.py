"""Errors on /v1/messages* in Anthropic's shape, whoever makes them: the view, the pipeline, the
upstream, auth and the rate limiter (middleware), the body limit, a database outage, a bug. The
Responses API keeps OpenAI's shape. Auth also takes the key as `x-api-key`."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from conversations_app.store import store
from surfaces_app.anthropic_messages import translate
from tests.fakes.openai_upstream import Fail
from tests.identity.conftest import GatewayClient
from tests.surfaces.messages import create, post

pytestmark = pytest.mark.django_db

BODY = {"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def anthropic_error(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    assert response["request-id"] == response["X-Request-ID"]
    return body["error"]["message"]


def test_an_unknown_model_is_an_invalid_request(gateway):
    # As on /v1/responses: a 400 naming the model (Anthropic answers 404; the SDK raises either way).
    assert "'nope' does not exist" in anthropic_error(create(model="nope"), 400, "invalid_request_error")


def test_a_body_that_is_not_json_is_an_invalid_request(gateway):
    anthropic_error(post("/v1/messages", b"{not json"), 400, "invalid_request_error")
    anthropic_error(post("/v1/messages/count_tokens", b"[]"), 400, "invalid_request_error")


def test_other_methods_are_refused_in_anthropics_shape(gateway, client):
    response = client.get("/v1/messages")
    anthropic_error(response, 405, "invalid_request_error")
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(("fail", "status", "kind"), [
    (Fail(500, "upstream broke"), 502, "api_error"),
    (Fail(429, "slow down", type="rate_limit_error"), 429, "rate_limit_error"),
    (Fail(400, "bad upstream request", type="invalid_request_error"), 400, "invalid_request_error"),
])
def test_upstream_failures_before_the_answer_are_statuses(gateway, fake_openai, fail, status, kind):
    fake_openai.script(fail)
    anthropic_error(create(model="gpt-test"), status, kind)
    fake_openai.script(fail)
    anthropic_error(create(model="gpt-test", stream=True), status, kind)


def test_a_body_over_the_limit_is_request_too_large(gateway):
    anthropic_error(create(model="gpt-test", messages=[{"role": "user", "content": "x" * 70_000}]), 413,
                    "request_too_large")


def test_a_database_outage_is_overloaded(settings, gateway, monkeypatch):
    settings.GATEWAY.conversations.store_stateless_calls = True

    def unavailable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(store, "check_available", unavailable)
    response = create(model="gpt-test")
    anthropic_error(response, 503, "overloaded_error")
    assert response["Retry-After"] == "1"


def test_a_bug_is_an_api_error(gateway, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(translate, "create_request", broken)
    assert anthropic_error(create(model="gpt-test"), 500, "api_error") == "The gateway hit an internal error."


def test_auth_refusals_are_authentication_errors_and_x_api_key_is_a_credential(configure, make_key):
    configure(auth={"enabled": True})
    key = make_key(owner="acme").key
    anthropic_error(post("/v1/messages", BODY), 401, "authentication_error")
    anthropic_error(post("/v1/messages", BODY, **{"x-api-key": "gwk_deadbeef_nope"}), 401, "authentication_error")
    anthropic_error(post("/v1/messages/count_tokens", {"model": "gpt-test", "messages": BODY["messages"]}), 401,
                    "authentication_error")
    assert post("/v1/messages", BODY, **{"x-api-key": key, "anthropic-version": "2023-06-01"}).status_code == 200
    assert post("/v1/messages", BODY, Authorization=f"Bearer {key}").status_code == 200
    # x-api-key is a credential on the other APIs too; their errors keep OpenAI's shape.
    assert GatewayClient().get("/v1/models", headers={"x-api-key": key}).status_code == 200
    refused = GatewayClient().create(model="gpt-test", input="hi")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert "request-id" not in refused


def test_a_model_the_key_may_not_use_is_refused_like_an_unknown_one(configure, make_key):
    configure(auth={"enabled": True})
    key = make_key(owner="acme", allowed_models=["demo"]).key
    refused = anthropic_error(post("/v1/messages", BODY, **{"x-api-key": key}), 400, "invalid_request_error")
    assert "'gpt-test'" in refused


def test_the_rate_limiters_refusal_is_a_rate_limit_error(limited, make_key):
    limited(requests_per_minute=1)
    key = make_key().key
    assert post("/v1/messages", BODY, **{"x-api-key": key}).status_code == 200
    refused = post("/v1/messages", BODY, **{"x-api-key": key})
    assert "Rate limit reached" in anthropic_error(refused, 429, "rate_limit_error")
    assert int(refused["Retry-After"]) >= 1 and refused["x-ratelimit-limit-requests"] == "1"
