"""JSON log lines: the seed's fields, the request id everywhere, and the "response generated" line."""

from __future__ import annotations

import json
import logging
import uuid

from gateway_project.observability.logging import JsonFormatter, TextFormatter, logging_config


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_turn_logs_response_generated_with_the_seed_fields(client, log_lines, spans):
    response = client.post("/v1/responses", {"model": "gpt-test", "input": "hi"}, **{"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    [generated] = [line for line in lines(log_lines) if line["msg"] == "response generated"]
    assert generated["level"] == "INFO"
    assert generated["time"].endswith("Z")
    assert generated["request_id"] == "abc-123"
    assert generated["provider"] == "openai"
    assert generated["model"] == "gpt-4o-mini-upstream"
    assert generated["input_tokens"] == 11 and generated["output_tokens"] == 7
    [provider_span] = [s for s in spans.get_finished_spans() if s.name == "provider.generate"]
    assert generated["trace_id"] == format(provider_span.context.trace_id, "032x")
    assert generated["span_id"] == format(provider_span.context.span_id, "016x")


def test_every_line_of_a_request_carries_its_ids(client, log_lines, spans):
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "stream": True},
                **{"X-Request-ID": "stream-1"}).getvalue()
    records = lines(log_lines)
    assert {line["msg"] for line in records} >= {"response generated", "request"}
    [server] = [s for s in spans.get_finished_spans() if s.name == "POST v1/responses"]
    for line in records:
        assert line["request_id"] == "stream-1", line
        assert line["trace_id"] == format(server.context.trace_id, "032x"), line
    [access] = [line for line in records if line["msg"] == "request"]
    assert access["status"] == 200 and access["route"] == "v1/responses" and access["duration_ms"] > 0
    assert access["span_id"] == format(server.context.span_id, "016x")


def test_a_refused_request_logs_why_with_its_request_id(client, log_lines):
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi", "temperature": 9},
                **{"X-Request-ID": "refused-1"})
    client.client.get("/v1/responses/resp_missing", headers={"X-Request-ID": "refused-2"})
    access = {line["request_id"]: line for line in lines(log_lines) if line["msg"] == "request"}
    refused = access["refused-1"]
    assert (refused["status"], refused["error_type"], refused["error_param"]) == (
        400, "invalid_request_error", "temperature")
    assert "temperature" in refused["error_message"]
    missing = access["refused-2"]
    assert (missing["status"], missing["error_code"]) == (404, "not_found")
    assert "resp_missing" in missing["error_message"]
    # Django's own "Bad Request: /v1/responses" line, which said nothing, is not emitted.
    assert not [line for line in lines(log_lines) if line["msg"].startswith(("Bad Request", "Not Found"))]


def test_an_unsafe_request_id_is_replaced(client):
    for unsafe in ("a b", "x" * 200, "evil\\nline", ""):
        response = client.client.get("/health", headers={"X-Request-ID": unsafe})
        uuid.UUID(response["X-Request-ID"])


def test_every_response_carries_a_request_id(client):
    for path in ("/health", "/v1/models", "/nowhere", "/metrics"):
        assert client.client.get(path)["X-Request-ID"]


def test_no_trace_ids_without_tracing(client, log_lines, settings, fake_openai):
    from tests.observability.conftest import observed_config

    settings.GATEWAY = observed_config(fake_openai.url, tracing_on=False)
    client.post("/v1/responses", {"model": "gpt-test", "input": "hi"}, **{"X-Request-ID": "r1"})
    for line in lines(log_lines):
        assert line["request_id"] == "r1" and "trace_id" not in line


def test_formatters():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.request_id, record.trace_id, record.span_id, record.model = "r", None, None, "m"
    assert json.loads(JsonFormatter().format(record)) | {"time": "t"} == {
        "time": "t", "level": "WARNING", "msg": "hello you", "logger": "x", "request_id": "r", "model": "m"}
    assert TextFormatter().format(record).endswith("WARNING x hello you request_id=r model=m")
    config = logging_config("json", "DEBUG")
    assert config["root"]["level"] == "DEBUG"
    assert config["formatters"]["gateway"]["()"].endswith("JsonFormatter")
