"""What /v1/chat/completions shares with /v1/responses, through the one pipeline: storage (off by
default, `store` or the config turn it on), the usage rollup, metrics and traces, auth and tenancy,
rate limits with tokens reserved from `max_tokens`."""

from __future__ import annotations

import json

import pytest
from django.db.models import Sum

from conversations_app.models import Item, StoredResponse, UsageDay
from tests.conftest import ApiClient
from tests.fakes.openai_upstream import Fail, Reply
from tests.identity.conftest import SHARED_REDIS, GatewayClient
from tests.observability.conftest import sample
from tests.surfaces.chat import PATH, chat, chunks
from tests.surfaces.test_chat_completions import WEATHER


def test_a_call_is_not_stored_by_default(api, fake_openai):
    assert chat(api).status_code == 200
    chunks(chat(api, stream=True))
    assert not StoredResponse.objects.exists() and not Item.objects.exists()


def test_store_true_keeps_the_transcript_under_the_same_id(api, fake_openai):
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_1", "name": "get_weather",
                                                   "arguments": '{"city":"Oslo"}'}]))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    body = chat(api, store=True, messages=messages, tools=[WEATHER], metadata={"app": "test"}).json()
    stored = StoredResponse.objects.get()
    assert body["id"] == "chatcmpl-" + stored.pk.removeprefix("resp_")
    assert (stored.status, stored.model, stored.previous_response_id) == ("completed", "gpt-test", None)
    kinds = list(Item.objects.filter(response=stored).order_by("kind", "position").values_list("kind", "type"))
    assert kinds == [(Item.Kind.INPUT, "message"), (Item.Kind.INPUT, "message"), (Item.Kind.OUTPUT, "function_call")]
    # Browsable as any stored response, with what the client sent.
    retrieved = api.get(f"/v1/responses/{stored.pk}").json()
    assert retrieved["metadata"] == {"app": "test"} and retrieved["output"][0]["call_id"] == "call_1"


def test_a_streamed_call_with_store_true_is_settled_in_place(api, fake_openai):
    found, done = chunks(chat(api, stream=True, store=True))
    stored = StoredResponse.objects.get()
    assert done and found[0]["id"] == "chatcmpl-" + stored.pk.removeprefix("resp_")
    assert stored.status == "completed"


@pytest.mark.parametrize("stream", [False, True])
def test_a_nul_in_the_answer_is_stored_as_a_replacement_character(api, fake_openai, stream):
    """Found by tests/fuzz/test_fuzz_chat.py: a model's U+0000 (which Postgres cannot store) with
    `store: true` was a 503 `database_unavailable` (an error chunk when streamed) after the
    upstream had answered, and the write was deferred to be retried for ever. The client gets the
    text as the model wrote it; the stored response has U+FFFD in its place."""
    fake_openai.script(Reply(text="a\x00b", tool_calls=[{"id": "call_\x00", "name": "get_weather",
                                                         "arguments": '{"city": "\\u0000"}'}]))
    response = chat(api, stream=stream, store=True, tools=[WEATHER])
    assert response.status_code == 200
    if stream:
        found, done = chunks(response)
        completion_id, text = found[0]["id"], "".join(c["choices"][0]["delta"].get("content") or "" for c in found)
        assert done
    else:
        body = response.json()
        completion_id, text = body["id"], body["choices"][0]["message"]["content"]
    assert text == "a\x00b"
    stored = StoredResponse.objects.get()
    assert completion_id == "chatcmpl-" + stored.pk.removeprefix("resp_") and stored.status == "completed"
    output = api.get(f"/v1/responses/{stored.pk}").json()["output"]
    assert output[0]["content"][0]["text"] == "a\ufffdb"
    assert output[1]["call_id"] == "call_\ufffd" and output[1]["arguments"] == '{"city": "\\u0000"}'


@pytest.mark.parametrize(("config", "sent", "kept"), [(True, None, True), (True, False, False), (False, True, True)])
def test_the_config_decides_when_the_request_does_not(api, settings, config, sent, kept):
    settings.GATEWAY.conversations.store_stateless_calls = config
    body = {"store": sent} if sent is not None else {}
    assert chat(api, **body).status_code == 200
    assert StoredResponse.objects.exists() is kept


def test_every_call_is_in_the_usage_rollup_stored_or_not(api, fake_openai):
    fake_openai.script(Reply(prompt_tokens=10, completion_tokens=3), Reply(prompt_tokens=20, completion_tokens=4),
                       Fail(500))
    assert chat(api).status_code == 200
    chunks(chat(api, stream=True, store=True))
    assert chat(api).status_code == 502
    totals = UsageDay.objects.aggregate(requests=Sum("requests"), errors=Sum("errors"), input=Sum("input_tokens"),
                                        output=Sum("output_tokens"))
    assert totals == {"requests": 3, "errors": 1, "input": 30, "output": 7}


def test_metrics_and_traces_tell_the_surface_by_its_path(db, observed, fake_openai, spans):
    client = ApiClient()
    labels = {"method": "POST", "path": "/v1/chat/completions", "status": "200"}
    before = sample("http_requests_total", **labels)
    provider_before = sample("provider_requests_total", provider="openai", model="gpt-4o-mini-upstream",
                             operation="generate", status="success")
    fake_openai.script(Reply(prompt_tokens=1000, completion_tokens=500))
    assert chat(client).status_code == 200
    assert sample("http_requests_total", **labels) == before + 1
    assert sample("provider_requests_total", provider="openai", model="gpt-4o-mini-upstream", operation="generate",
                  status="success") == provider_before + 1
    names = [span.name for span in spans.get_finished_spans()]
    assert "POST v1/chat/completions" in names and "provider.generate" in names


def test_auth_and_tenancy_apply(configure, make_key, fake_openai):
    configure(auth={"enabled": True})
    refused = GatewayClient().client.post(PATH, data=json.dumps({"model": "gpt-test", "messages": [
        {"role": "user", "content": "x"}]}), content_type="application/json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert fake_openai.requests == []
    issued = make_key(owner="acme", allowed_models=["demo"])
    client = GatewayClient(issued.key).client
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "store": True}
    not_allowed = client.post(PATH, data=json.dumps(body), content_type="application/json")
    assert not_allowed.status_code == 400 and not_allowed.json()["error"]["param"] == "model"
    served = client.post(PATH, data=json.dumps({**body, "model": "demo"}), content_type="application/json")
    assert served.status_code == 200
    assert StoredResponse.objects.get().owner == "acme"


def test_rate_limits_reserve_tokens_from_max_tokens(configure, make_key, redis_prefix, settings, fake_openai):
    settings.REDIS_URL = SHARED_REDIS
    configure(auth={"enabled": True}, rate_limit={"enabled": True, "redis_key_prefix": redis_prefix,
                                                  "requests_per_minute": 100, "tokens_per_minute": 1000})
    client = GatewayClient(make_key().key).client
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900}
    first = client.post(PATH, data=json.dumps({**body, "stream": True}), content_type="application/json")
    assert first.status_code == 200  # its reservation is held until the stream ends
    second = client.post(PATH, data=json.dumps(body), content_type="application/json")
    assert second.status_code == 429 and second.json()["error"]["type"] == "tokens"
    chunks(first)
    third = client.post(PATH, data=json.dumps(body), content_type="application/json")
    assert third.status_code == 200 and "x-ratelimit-remaining-tokens" in third
