"""Messages is stateless: every call is counted in the usage rollup, its transcript kept only with
`conversations.store_stateless_calls` on, as the response `resp_<hex>` of the message `msg_<hex>`.
Also `count_tokens`, which stores and counts nothing."""

from __future__ import annotations

import pytest

from conversations_app.models import Item, StoredResponse, UsageDay
from tests.fakes.openai_upstream import Fail, Reply
from tests.observability.conftest import observed_config, sample
from tests.surfaces.messages import create, events, post

pytestmark = pytest.mark.django_db


def usage_row() -> UsageDay:
    return UsageDay.objects.get(model="gpt-test")


def test_calls_are_counted_and_not_stored_by_default(gateway, fake_openai):
    fake_openai.script(Reply(prompt_tokens=30, completion_tokens=5), Reply(prompt_tokens=20, completion_tokens=4),
                       Fail(500))
    assert create(model="gpt-test").status_code == 200
    assert events(create(model="gpt-test", stream=True))[-1]["type"] == "message_stop"
    assert create(model="gpt-test").status_code == 502
    row = usage_row()
    assert (row.requests, row.errors, row.input_tokens, row.output_tokens) == (3, 1, 50, 9)
    assert row.provider == "openai"
    assert not StoredResponse.objects.exists() and not Item.objects.exists()


def test_with_store_stateless_calls_the_transcript_is_kept_under_the_messages_id(settings, gateway, fake_openai):
    settings.GATEWAY.conversations.store_stateless_calls = True
    fake_openai.script(Reply(text="Stored answer."))
    body = create(model="gpt-test", system="Be terse.", messages=[{"role": "user", "content": "Keep me"}]).json()
    stored = StoredResponse.objects.get(pk="resp_" + body["id"].removeprefix("msg_"))
    assert stored.status == "completed" and stored.model == "gpt-test"
    items = list(Item.objects.filter(response=stored).order_by("kind", "position").values_list("type", "data"))
    assert [t for t, _ in items] == ["message", "message"]
    assert "Keep me" in str(items[0][1]) and "Stored answer." in str(items[1][1])
    start = events(create(model="gpt-test", stream=True))[0]
    streamed = StoredResponse.objects.get(pk="resp_" + start["message"]["id"].removeprefix("msg_"))
    assert streamed.status == "completed"
    assert usage_row().requests == 2


def test_count_tokens_counts_with_the_gateways_tokenizer_for_a_chat_upstream(gateway, fake_openai):
    short = post("/v1/messages/count_tokens", {"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]})
    assert short.status_code == 200 and set(short.json()) == {"input_tokens"}
    longer = post("/v1/messages/count_tokens", {
        "model": "gpt-test", "system": "You are a helpful assistant who answers at length.",
        "messages": [{"role": "user", "content": "Hi, what is the weather like in Paris today?"}],
        "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
    assert longer.json()["input_tokens"] > short.json()["input_tokens"] > 0
    # Nothing was generated, stored or counted as a turn.
    assert fake_openai.requests == []
    assert not UsageDay.objects.exists() and not StoredResponse.objects.exists()


def test_count_tokens_refuses_create_only_parameters_not_at_all_and_bad_ones_by_name(gateway):
    ok = post("/v1/messages/count_tokens", {"model": "gpt-test", "max_tokens": 5,
                                            "messages": [{"role": "user", "content": "Hi"}]})
    assert ok.status_code == 200
    bad = post("/v1/messages/count_tokens", {"model": "gpt-test", "messages": "Hi"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("Invalid value for 'messages'")


def test_the_seeds_metric_families_tell_the_surfaces_apart_by_path(db, settings, fake_openai):
    settings.GATEWAY = observed_config(fake_openai.url, tracing_on=False)
    labels = {"method": "POST", "path": "/v1/messages", "status": "200"}
    before = sample("http_requests_total", **labels)
    provider_before = sample("provider_requests_total", provider="openai", model="gpt-4o-mini-upstream",
                             operation="generate", status="success")
    assert create(model="gpt-test").status_code == 200
    assert sample("http_requests_total", **labels) == before + 1
    assert sample("provider_requests_total", provider="openai", model="gpt-4o-mini-upstream",
                  operation="generate", status="success") == provider_before + 1
