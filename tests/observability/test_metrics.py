"""The seed's metric families: names, types, labels and values, recorded through the real request path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse
from prometheus_client.parser import text_string_to_metric_families

from conversations_app.models import Conversation, StoredResponse
from gateway_project.middleware.metrics import MetricsMiddleware
from gateway_project.observability import metrics
from tests.conftest import sse_frames
from tests.fakes.openai_upstream import Fail, Reply
from tests.observability.conftest import observed_config, sample

# The seed's families (plus ours), with type and label names as users will query them.
EXPECTED = {
    "http_requests_total": ("counter", {"method", "path", "status"}),
    "http_request_duration_seconds": ("histogram", {"method", "path"}),
    "http_request_size_bytes": ("histogram", {"method", "path"}),
    "http_response_size_bytes": ("histogram", {"method", "path"}),
    "provider_requests_total": ("counter", {"provider", "model", "operation", "status"}),
    "provider_request_duration_seconds": ("histogram", {"provider", "model", "operation"}),
    "provider_tokens_total": ("counter", {"provider", "model", "type"}),
    "provider_cost_usd_total": ("counter", {"provider", "model"}),
    "provider_stream_ttfb_seconds": ("histogram", {"provider", "model"}),
    "provider_stream_chunks_total": ("counter", {"provider", "model"}),
    "provider_stream_duration_seconds": ("histogram", {"provider", "model"}),
    "conversation_operations_total": ("counter", {"operation", "backend", "status"}),
    "conversation_operation_duration_seconds": ("histogram", {"operation", "backend"}),
    "conversation_active_count": ("gauge", {"backend"}),
    "gateway_overhead_seconds": ("histogram", {"path"}),
}


def scrape(client: Any) -> dict[str, Any]:
    response = client.client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = family
    return families


def test_every_seed_family_is_exposed_with_its_type_and_labels(client):
    first = client.create(model="gpt-test", input="hi")
    client.post("/v1/responses", {"model": "gpt-test", "input": "more", "stream": True,
                                  "previous_response_id": first.json()["id"]}).getvalue()
    families = scrape(client)
    for name, (kind, labels) in EXPECTED.items():
        # The parser strips `_total` from counter family names.
        family = families.get(name.removesuffix("_total")) if kind == "counter" else families.get(name)
        assert family is not None, f"{name} missing"
        assert family.type == kind, name
        samples = [s for s in family.samples if not s.name.endswith(("_created", "_bucket"))]
        assert samples, f"{name} has no samples"
        assert {k for k in samples[0].labels if k != "le"} == labels, name


def test_the_rate_limit_families_live_with_the_others():
    families = {family.name: (family.type, family.documentation)
                for collector in (metrics.rate_limit_rejections_total, metrics.rate_limit_decision_seconds,
                                  metrics.rate_limit_backend_errors_total)
                for family in collector.describe()}
    assert families == {
        "rate_limit_rejections": ("counter", "Requests refused by the gateway's rate limiter."),
        "rate_limit_decision_seconds": (
            "histogram", "Time to take one rate-limit decision (a Redis round trip when Redis is used)."),
        "rate_limit_backend_errors": ("counter", "Rate-limit decisions that could not reach Redis."),
    }


def test_http_path_label_is_the_route_template_never_the_raw_url(client):
    before = sample("http_requests_total", method="GET", path="/v1/responses/{response_id}", status="404")
    unmatched = sample("http_requests_total", method="GET", path="unmatched", status="404")
    for index in range(3):
        assert client.client.get(f"/v1/responses/resp_{index}abc").status_code == 404
        assert client.client.get(f"/random/{index}/path").status_code == 404
    assert sample("http_requests_total", method="GET", path="/v1/responses/{response_id}", status="404") == before + 3
    assert sample("http_requests_total", method="GET", path="unmatched", status="404") == unmatched + 3
    body = client.client.get("/metrics").content.decode()
    assert "resp_0abc" not in body and "/random/" not in body


def test_route_label():
    assert (metrics.route_label("v1/responses/<str:response_id>/input_items")
            == "/v1/responses/{response_id}/input_items")
    assert metrics.route_label("v1/models") == "/v1/models"
    assert metrics.route_label(None) == "unmatched"


def test_unknown_methods_share_one_label(client):
    before = sample("http_requests_total", method="OTHER", path="/v1/models", status="405")
    client.client.generic("BREW", "/v1/models")
    assert sample("http_requests_total", method="OTHER", path="/v1/models", status="405") == before + 1


def test_sizes_and_durations_are_observed(client):
    labels = {"method": "POST", "path": "/v1/responses"}
    count = sample("http_request_size_bytes_count", **labels)
    size = sample("http_request_size_bytes_sum", **labels)
    response = client.create(model="gpt-test", input="hello there")
    assert response.status_code == 200
    assert sample("http_request_size_bytes_count", **labels) == count + 1
    sent = len(b'{"model": "gpt-test", "input": "hello there"}')
    assert sample("http_request_size_bytes_sum", **labels) - size == sent
    assert sample("http_response_size_bytes_sum", **labels) >= len(response.content)
    assert sample("http_request_duration_seconds_count", **labels) >= 1


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_path_is_404_when_metrics_or_observability_are_off(client, settings, fake_openai, path):
    settings.GATEWAY = observed_config(fake_openai.url, metrics_on=False)
    assert client.client.get(path).status_code == 404
    settings.GATEWAY = observed_config(fake_openai.url, enabled=False)
    assert client.client.get(path).status_code == 404


def test_other_methods_on_the_metrics_path_are_a_json_405(client):
    # Found by tests/fuzz: every method scraped the metrics, where every other route answers a 405.
    for method in ("post", "put", "patch", "delete", "options"):
        response = getattr(client.client, method)("/metrics")
        assert response.status_code == 405, method
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response["allow"] == "GET, HEAD"
    assert client.client.head("/metrics").status_code == 200  # probes and load balancers use HEAD


def test_metrics_middleware_switches_itself_off(settings, fake_openai):
    settings.GATEWAY = observed_config(fake_openai.url, metrics_on=False)
    with pytest.raises(MiddlewareNotUsed):
        MetricsMiddleware(lambda request: HttpResponse())


def test_provider_calls_tokens_and_cost(client, fake_openai):
    model = "gpt-4o-mini-upstream"
    ok = dict(provider="openai", model=model, operation="generate", status="success")
    requests_before = sample("provider_requests_total", **ok)
    input_before = sample("provider_tokens_total", provider="openai", model=model, type="input")
    output_before = sample("provider_tokens_total", provider="openai", model=model, type="output")
    cost_before = sample("provider_cost_usd_total", provider="openai", model=model)
    fake_openai.script(Reply(prompt_tokens=1000, completion_tokens=500))
    body = client.create(model="gpt-test", input="hi").json()
    assert sample("provider_requests_total", **ok) == requests_before + 1
    assert sample("provider_tokens_total", provider="openai", model=model, type="input") == input_before + 1000
    assert sample("provider_tokens_total", provider="openai", model=model, type="output") == output_before + 500
    expected_cost = (1000 * 0.15 + 500 * 0.60) / 1_000_000
    assert (sample("provider_cost_usd_total", provider="openai", model=model)
            == pytest.approx(cost_before + expected_cost))
    assert StoredResponse.objects.get(pk=body["id"]).cost_usd == Decimal("0.00045000")


def test_models_without_prices_store_no_cost(client):
    body = client.create(model="demo", input="hi").json()
    assert StoredResponse.objects.get(pk=body["id"]).cost_usd is None


def test_stream_metrics(client, fake_openai):
    model = "gpt-4o-mini-upstream"
    chunks_before = sample("provider_stream_chunks_total", provider="openai", model=model)
    ttfb_before = sample("provider_stream_ttfb_seconds_count", provider="openai", model=model)
    duration_before = sample("provider_stream_duration_seconds_count", provider="openai", model=model)
    ok_before = sample("provider_requests_total", provider="openai", model=model, operation="generate_stream",
                       status="success")
    fake_openai.script(Reply(text="one two three", first_byte_delay=0.05))
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True}).getvalue()
    # Three text deltas, the finish and the usage event.
    assert sample("provider_stream_chunks_total", provider="openai", model=model) == chunks_before + 5
    assert sample("provider_stream_ttfb_seconds_count", provider="openai", model=model) == ttfb_before + 1
    assert sample("provider_stream_ttfb_seconds_sum", provider="openai", model=model) >= 0.05
    assert sample("provider_stream_duration_seconds_count", provider="openai", model=model) == duration_before + 1
    assert sample("provider_requests_total", provider="openai", model=model, operation="generate_stream",
                  status="success") == ok_before + 1


def test_provider_errors_are_counted_by_kind(client, fake_openai):
    labels = dict(provider="openai", model="gpt-4o-mini-upstream", operation="generate", status="bad_request")
    before = sample("provider_requests_total", **labels)
    fake_openai.script(Fail(400, "bad"))
    assert client.create(model="gpt-test", input="hi").status_code == 400
    assert sample("provider_requests_total", **labels) == before + 1


def test_a_shutdown_or_hang_up_is_cancelled_not_a_provider_error(client, fake_openai, spans):
    from responses_app.cancellation import SHUTDOWN, live_turns

    model = "gpt-4o-mini-upstream"
    labels = dict(provider="openai", model=model, operation="generate_stream")
    cancelled = sample("provider_requests_total", **labels, status="cancelled")
    errors = sum(sample("provider_requests_total", **labels, status=kind)
                 for kind in ("timeout", "upstream", "error", "unavailable"))
    fake_openai.script(Reply(text="one two three four five", chunk_delay=0.3))
    stream = client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True})
    frames = sse_frames(stream.streaming_content)
    next(frames)
    live_turns.cancel_all(SHUTDOWN)
    assert b"response.incomplete" in b"".join(frames)
    assert sample("provider_requests_total", **labels, status="cancelled") == cancelled + 1
    assert sum(sample("provider_requests_total", **labels, status=kind)
               for kind in ("timeout", "upstream", "error", "unavailable")) == errors
    [stream_span] = [span for span in spans.get_finished_spans() if span.name == "provider.generate_stream"]
    assert stream_span.attributes["provider.status"] == "cancelled"
    assert stream_span.status.is_ok  # unset: not an error


def test_store_operations_are_counted_and_timed(client):
    get_ok = dict(operation="get", backend="postgres", status="success")
    get_missing = dict(operation="get", backend="postgres", status="not_found")
    create_ok = dict(operation="create", backend="postgres", status="success")
    before = [sample("conversation_operations_total", **labels) for labels in (get_ok, get_missing, create_ok)]
    first = client.create(model="demo", input="hi").json()
    client.create(model="demo", input="again", previous_response_id=first["id"])
    client.create(model="demo", input="again", previous_response_id="resp_missing")
    after = [sample("conversation_operations_total", **labels) for labels in (get_ok, get_missing, create_ok)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2]
    assert sample("conversation_operation_duration_seconds_count", operation="create", backend="postgres") >= 2


def test_active_conversations_are_counted_in_the_database(client):
    for text in ("a", "b"):
        client.create(model="demo", input=text)
    expected = Conversation.objects.count()
    assert expected >= 2
    families = scrape(client)
    [value] = [s.value for s in families["conversation_active_count"].samples if s.labels == {"backend": "postgres"}]
    assert value == expected


def test_active_conversations_leave_out_conversations_past_the_ttl(client, settings, fake_openai):
    from datetime import timedelta

    from django.utils import timezone

    client.create(model="demo", input="old")
    client.create(model="demo", input="new")
    oldest = Conversation.objects.order_by("updated_at").first()
    assert oldest is not None
    Conversation.objects.filter(pk=oldest.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    families = scrape(client)
    [value] = [s.value for s in families["conversation_active_count"].samples]
    assert value == Conversation.objects.count() - 1


def test_gateway_overhead_excludes_the_upstream_wait(client, fake_openai):
    labels = {"path": "/v1/responses"}
    count = sample("gateway_overhead_seconds_count", **labels)
    total = sample("gateway_overhead_seconds_sum", **labels)
    duration = sample("http_request_duration_seconds_sum", method="POST", path="/v1/responses")
    fake_openai.script(Reply(first_byte_delay=0.3))
    client.create(model="gpt-test", input="hi")
    assert sample("gateway_overhead_seconds_count", **labels) == count + 1
    overhead = sample("gateway_overhead_seconds_sum", **labels) - total
    request = sample("http_request_duration_seconds_sum", method="POST", path="/v1/responses") - duration
    assert request >= 0.3
    assert overhead < request - 0.25
