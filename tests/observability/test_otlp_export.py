"""Spans of a gunicorn-run gateway, as an OTLP collector on loopback receives them (gRPC and HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn import GatewayProcess, free_port
from tests.fakes.openai_upstream import FakeOpenAI
from tests.observability.e2e_config import gateway_yaml
from tests.observability.otlp_receiver import GrpcReceiver, HttpReceiver, Receiver

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    receiver = GrpcReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def tracing(receiver: Receiver, sampler: dict, protocol: str) -> dict:
    return {"enabled": True, "service_name": "gw-under-test", "sampler": sampler,
            "exporter": {"type": "otlp", "endpoint": receiver.endpoint, "protocol": protocol, "insecure": True}}


def server_spans(receiver: Receiver, route: str) -> list:
    return [s for s in receiver.spans if s.name.endswith(route) and s.kind == 2]  # SPAN_KIND_SERVER


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_arrive_with_the_seed_hierarchy(fake_openai: FakeOpenAI, grpc_receiver, http_receiver, protocol):
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    config = gateway_yaml(fake_openai.url, tracing=tracing(receiver, {"type": "always"}, protocol))
    with GatewayProcess(config, workers=2) as gw:
        first = requests.post(f"{gw.base_url}/responses", json={"model": "gpt-test", "input": "hi"},
                              headers={"X-Request-ID": "first-1", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                              timeout=30)
        assert first.status_code == 200, gw.log()
        outgoing = fake_openai.last.headers["traceparent"]
        streamed = requests.post(f"{gw.base_url}/responses", json={
            "model": "gpt-test", "input": "more", "stream": True, "previous_response_id": first.json()["id"],
        }, headers={"X-Request-ID": "second-2"}, timeout=30)
        assert "response.completed" in streamed.text
    # Stopping gunicorn gracefully flushed every queued span (worker_exit).

    servers = {s.attributes["http.request_id"]: s for s in server_spans(receiver, "v1/responses")}
    assert set(servers) == {"first-1", "second-2"}, receiver.spans
    one, two = servers["first-1"], servers["second-2"]
    assert one.service_name == "gw-under-test"
    assert (one.trace_id, one.parent_span_id) == (TRACE_ID, PARENT_ID), "incoming traceparent continued"
    assert one.attributes["http.method"] == "POST" and one.attributes["http.route"] == "v1/responses"
    assert one.attributes["http.status_code"] == 200

    def children(server):
        return {s.name: s for s in receiver.spans
                if s.trace_id == server.trace_id and s.parent_span_id == server.span_id}

    first_children = children(one)
    assert set(first_children) == {"provider.generate", "conversation.create"}  # JSON: written once
    generate = first_children["provider.generate"]
    assert outgoing == f"00-{TRACE_ID}-{generate.span_id}-01", "upstream gets a child of the provider span"
    assert generate.attributes["provider.name"] == "openai"
    assert generate.attributes["http.request_id"] == "first-1"
    assert generate.attributes["provider.model"] == "gpt-4o-mini"
    assert generate.attributes["gen_ai.usage.output_tokens"] == 7
    second_children = children(two)
    assert set(second_children) == {"provider.generate_stream", "conversation.get", "conversation.create",
                                    "conversation.update"}
    stream = second_children["provider.generate_stream"]
    assert stream.attributes["provider.chunk_count"] > 0 and stream.attributes["provider.ttfb_seconds"] > 0
    get = second_children["conversation.get"]
    assert get.attributes["previous_response_id"] == first.json()["id"]
    assert get.attributes["conversation.backend"] == "postgres"
    assert get.attributes["conversation.message_count"] == 2


@pytest.mark.parametrize(("sampler", "requests_sent", "low", "high"), [
    ({"type": "never"}, 30, 0, 0),
    ({"type": "always"}, 30, 30, 30),
    # Binomial(300, 0.1): mean 30, sd 5.2; these bounds fail about once in 10^5 runs.
    ({"type": "probability", "rate": 0.1}, 300, 10, 55),
])
def test_the_sampler_decides_how_many_traces_arrive(fake_openai, grpc_receiver, sampler, requests_sent, low, high):
    config = gateway_yaml(fake_openai.url, tracing=tracing(grpc_receiver, sampler, "grpc"), log_level="warn")
    with GatewayProcess(config, workers=2) as gw, requests.Session() as session:
        for _ in range(requests_sent):
            assert session.get(f"{gw.base_url}/models", timeout=10).status_code == 200
    traces = server_spans(grpc_receiver, "v1/models")
    assert low <= len(traces) <= high, len(traces)


def test_an_unreachable_collector_logs_one_error_and_never_slows_requests(fake_openai):
    dead = {"enabled": True, "sampler": {"type": "always"},
            "exporter": {"type": "otlp", "endpoint": f"127.0.0.1:{free_port()}", "insecure": True}}
    with GatewayProcess(gateway_yaml(fake_openai.url, tracing=dead), workers=1) as gw:
        started = time.perf_counter()
        with requests.Session() as session:
            for _ in range(20):
                assert session.post(f"{gw.base_url}/responses", json={"model": "gpt-test", "input": "hi"},
                                    timeout=10).status_code == 200
        assert time.perf_counter() - started < 5
        # A graceful stop tries to flush to the dead collector: still only the one error line.
        assert gw.proc is not None
        gw.proc.terminate()
        gw.proc.wait(timeout=30)
        log = gw.log()
    errors = [line for line in log.splitlines() if "cannot export spans" in line]
    assert len(errors) == 1, log
    assert json.loads(errors[0])["level"] == "ERROR"


def test_each_websocket_response_is_a_span_under_the_connection(fake_openai: FakeOpenAI, grpc_receiver):
    from websockets.sync.client import connect

    config = gateway_yaml(fake_openai.url, tracing=tracing(grpc_receiver, {"type": "always"}, "grpc"))
    with GatewayProcess(config, workers=1) as gw:
        url = gw.url.replace("http://", "ws://") + "/v1/responses"
        with connect(url, additional_headers={"X-Request-ID": "conn-1"}) as ws:
            for lane in ("a", "b"):
                ws.send(json.dumps({"type": "response.create", "model": "gpt-test", "input": "hi", "stream_id": lane}))
            done = 0
            while done < 2:
                done += json.loads(ws.recv(timeout=20))["type"] == "response.completed"
    connection = next(s for s in server_spans(grpc_receiver, "v1/responses") if s.name == "GET v1/responses")
    assert connection.attributes["http.request_id"] == "conn-1" and connection.attributes["http.status_code"] == 101
    responses = [s for s in grpc_receiver.spans if s.name == "websocket response.create"]
    assert len(responses) == 2
    for span in responses:
        assert (span.trace_id, span.parent_span_id) == (connection.trace_id, connection.span_id)
        assert span.attributes["gateway.transport"] == "websocket"
        assert span.attributes["websocket.connection_id"] == "conn-1"
        assert span.attributes["http.request_id"] not in ("conn-1", "")
        children = {s.name for s in grpc_receiver.spans if s.parent_span_id == span.span_id}
        assert {"provider.generate_stream", "conversation.create", "conversation.update"} <= children
    assert {s.attributes["websocket.stream_id"] for s in responses} == {"a", "b"}
