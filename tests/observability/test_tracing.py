"""Spans of a request: the seed's names, hierarchy and attributes, and W3C trace context in and out."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind, StatusCode

from gateway_project.config import ExporterConfig, SamplerConfig
from gateway_project.middleware.tracing import TracingMiddleware
from gateway_project.observability import tracing
from tests.fakes.openai_upstream import Reply
from tests.observability.conftest import observed_config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def by_name(spans):
    out: dict[str, list] = {}
    for span in spans.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def test_a_follow_up_turn_has_the_seed_hierarchy(client, spans):
    first = client.create(model="gpt-test", input="hi", metadata={}).json()
    spans.clear()
    response = client.post("/v1/responses",
                           {"model": "gpt-test", "input": "again", "previous_response_id": first["id"]},
                           **{"X-Request-ID": "req-42"})
    assert response.status_code == 200
    named = by_name(spans)
    [server] = named["POST v1/responses"]
    [generate] = named["provider.generate"]
    [get] = named["conversation.get"]
    [create] = named["conversation.create"]
    assert "conversation.update" not in named  # a JSON turn is written once, whole
    assert server.kind == SpanKind.SERVER and server.parent is None
    for child in (generate, get, create):
        assert child.context.trace_id == server.context.trace_id
        assert child.parent.span_id == server.context.span_id, child.name
    assert server.attributes["http.method"] == "POST"
    assert server.attributes["http.route"] == "v1/responses"
    assert server.attributes["http.status_code"] == 200
    assert server.attributes["http.request_id"] == "req-42"
    for child in (generate, get, create):
        assert child.attributes["http.request_id"] == "req-42", child.name
    assert generate.attributes["provider.name"] == "openai"
    assert generate.attributes["provider.model"] == "gpt-4o-mini-upstream"
    assert generate.attributes["provider.input_tokens"] == 11
    assert generate.attributes["provider.output_tokens"] == 7
    assert generate.attributes["gen_ai.system"] == "openai"
    assert generate.attributes["gen_ai.request.model"] == "gpt-4o-mini-upstream"
    assert generate.attributes["gen_ai.usage.input_tokens"] == 11
    assert generate.attributes["gen_ai.usage.output_tokens"] == 7
    assert get.attributes["previous_response_id"] == first["id"]
    assert get.attributes["conversation.backend"] == "postgres"
    assert get.attributes["conversation.message_count"] == 2
    conversation_id = get.attributes["conversation.id"]
    assert conversation_id.startswith("conv_")
    assert create.attributes["conversation.id"] == conversation_id
    assert create.attributes["conversation.model"] == "gpt-test"
    assert create.attributes["conversation.message_count"] == 4
    assert create.attributes["response.status"] == "completed"


def test_a_stream_keeps_its_spans_in_one_trace_until_the_last_byte(client, spans, fake_openai):
    fake_openai.script(Reply(text="a b c d", chunk_delay=0.01))
    response = client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True})
    assert not by_name(spans).get("POST v1/responses"), "the server span must not end before the stream"
    response.getvalue()
    named = by_name(spans)
    [server] = named["POST v1/responses"]
    [stream] = named["provider.generate_stream"]
    [create] = named["conversation.create"]
    assert stream.parent.span_id == server.context.span_id
    assert create.parent.span_id == server.context.span_id
    assert stream.attributes["provider.chunk_count"] == 6
    assert stream.attributes["provider.ttfb_seconds"] > 0
    assert stream.attributes["provider.output_tokens"] == 7
    assert server.end_time >= create.end_time


def test_an_incoming_traceparent_is_continued_and_passed_upstream_as_a_child(client, spans, fake_openai):
    response = client.post("/v1/responses", {"model": "gpt-test", "input": "hi"},
                           traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert response.status_code == 200
    named = by_name(spans)
    [server] = named["POST v1/responses"]
    [generate] = named["provider.generate"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    outgoing = fake_openai.last.headers["traceparent"]
    assert outgoing == f"00-{TRACE_ID}-{format(generate.context.span_id, '016x')}-01"


def test_an_unsampled_caller_is_honoured(client, spans, fake_openai):
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi"}, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00")
    assert spans.get_finished_spans() == ()
    outgoing = fake_openai.last.headers["traceparent"]
    assert outgoing.startswith(f"00-{TRACE_ID}-") and outgoing.endswith("-00")


@pytest.mark.parametrize(("flags", "started"), [("01", 3), ("00", 1)], ids=["sampled", "unsampled"])
def test_under_an_unsampled_span_no_child_span_is_even_started(client, spans, fake_openai, monkeypatch, flags,
                                                                started):
    # The server span; sampled, also the provider's and the store's (`conversation.create`).
    calls: list[str] = []
    real = sdk_trace.Tracer.start_span

    def counted(self: sdk_trace.Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Tracer, "start_span", counted)
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi"},
                traceparent=f"00-{TRACE_ID}-{PARENT_ID}-{flags}")
    assert len(calls) == started, calls


def test_a_request_that_matches_no_route_is_named_by_its_method(client, spans):
    assert client.get("/no/such/route").status_code == 404
    [server] = spans.get_finished_spans()
    assert server.name == "GET"
    assert "http.route" not in server.attributes
    assert server.attributes["http.status_code"] == 404


def test_a_client_error_is_not_a_span_error(client, spans):
    assert client.create(model="no-such-model", input="hi").status_code == 400
    [server] = by_name(spans)["POST v1/responses"]
    assert server.status.status_code == StatusCode.UNSET


@pytest.mark.urls("tests.observability.failing_urls")
def test_a_crash_on_an_api_path_is_a_span_error(client, spans):
    client.client.raise_request_exception = False
    assert client.get("/v1/crash").status_code == 500
    [server] = by_name(spans)["GET v1/crash"]
    assert server.attributes["http.status_code"] == 500
    assert server.status.status_code == StatusCode.ERROR


@pytest.mark.urls("tests.observability.failing_urls")
def test_an_unhandled_view_exception_is_recorded_on_the_span(client, spans):
    client.client.raise_request_exception = False
    assert client.get("/internal/crash").status_code == 500
    [server] = by_name(spans)["GET internal/crash"]
    assert server.status.status_code == StatusCode.ERROR
    assert server.status.description == "RuntimeError: kaboom"
    [event] = server.events
    assert event.name == "exception" and event.attributes["exception.type"] == "RuntimeError"


@pytest.mark.urls("tests.observability.failing_urls")
def test_an_exception_in_the_middle_of_a_stream_is_recorded_on_the_span(client, spans):
    response = client.get("/internal/crash-mid-stream")
    with pytest.raises(ValueError, match="mid-stream"):
        response.getvalue()
    [server] = by_name(spans)["GET internal/crash-mid-stream"]
    assert server.status.status_code == StatusCode.ERROR
    assert server.status.description == "ValueError: mid-stream"
    assert [event.name for event in server.events] == ["exception"]


def test_the_server_span_is_current_only_during_its_request(client, spans):
    client.create(model="gpt-test", input="hi")
    assert trace.get_current_span() is trace.INVALID_SPAN
    response = client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True})
    assert trace.get_current_span().get_span_context().span_id != 0, "current until the last byte"
    response.getvalue()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_tracing_middleware_switches_itself_off(settings, fake_openai):
    settings.GATEWAY = observed_config(fake_openai.url, tracing_on=False)
    with pytest.raises(MiddlewareNotUsed):
        TracingMiddleware(lambda request: HttpResponse())


def test_no_spans_and_no_traceparent_when_tracing_is_off(client, spans, settings, fake_openai):
    settings.GATEWAY = observed_config(fake_openai.url, tracing_on=False)
    client.create(model="gpt-test", input="hi")
    assert spans.get_finished_spans() == ()
    assert "traceparent" not in fake_openai.last.headers


@pytest.mark.parametrize(("kind", "rate", "sampled"), [
    ("always", 0.0, 1000), ("never", 1.0, 0), ("probability", 0.1, 100),
])
def test_sampler(kind, rate, sampled):
    sampler = tracing.build_sampler(SamplerConfig(type=kind, rate=rate))
    step = (1 << 64) // 1000
    decisions = [sampler.should_sample(None, trace_id=i * step, name="x").decision for i in range(1000)]
    assert sum(d == Decision.RECORD_AND_SAMPLE for d in decisions) == pytest.approx(sampled, abs=5)
    assert "ParentBased" in sampler.get_description()


@pytest.mark.parametrize(("endpoint", "insecure", "url"), [
    ("localhost:4318", True, "http://localhost:4318/v1/traces"),
    ("collector:4318", False, "https://collector:4318/v1/traces"),
    ("http://c:4318/custom/path", True, "http://c:4318/custom/path"),
])
def test_http_exporter_url(endpoint, insecure, url):
    assert tracing._http_url(endpoint, insecure) == url


def test_an_unreachable_collector_is_reported_once_and_recovery_once(caplog):
    class Flaky(SpanExporter):
        results = [SpanExportResult.FAILURE] * 3 + [SpanExportResult.SUCCESS] * 2

        def export(self, spans):
            return self.results.pop(0)

    exporter = tracing.ReportingExporter(Flaky(), "the OTLP collector at x:4317 (grpc)")
    with caplog.at_level(logging.WARNING, logger="gateway_project.observability.tracing"):
        for _ in range(5):
            exporter.export([])
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2
    assert messages[0][0] == "ERROR" and "cannot export spans to the OTLP collector at x:4317" in messages[0][1]
    assert messages[1][0] == "WARNING"


def test_exporters_by_config():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert isinstance(tracing.build_exporter(ExporterConfig(type="stdout")), ConsoleSpanExporter)
    assert isinstance(tracing.build_exporter(ExporterConfig(protocol="http/protobuf", endpoint="h:4318")), Http)
    assert isinstance(tracing.build_exporter(ExporterConfig(endpoint="h:4317")), Grpc)
