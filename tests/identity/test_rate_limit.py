"""Rate limits in one process against the real shared Redis (a key prefix per test): headers and
Retry-After against the bucket state, token reservation and reconciliation, per-key overrides,
failed-auth traffic per address, trusted proxies, Redis failure modes, metrics."""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import weakref

import pytest
import redis
from prometheus_client import REGISTRY

from gateway_project.middleware.ratelimit import format_reset
from gateway_project.request_notes import notes_of
from identity_app.limiter import Limits, LocalBuckets
from tests.conftest import sse_events, sse_frames
from tests.fakes.openai_upstream import Fail, Reply
from tests.identity.conftest import SHARED_REDIS, GatewayClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def rds():
    client = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def limited(configure, redis_prefix, settings):
    settings.REDIS_URL = SHARED_REDIS

    def apply(auth: bool = True, **rate_limit):
        return configure(auth={"enabled": auth},
                         rate_limit={"enabled": True, "redis_key_prefix": redis_prefix, **rate_limit})

    return apply


class Buckets:
    def __init__(self, rds: redis.Redis, prefix: str) -> None:
        self.rds, self.prefix = rds, prefix

    def state(self, subject: str, kind: str) -> tuple[float, int]:
        raw = self.rds.hgetall(f"{self.prefix}{{{subject}}}:{kind}")
        return float(raw["level"]), int(raw["ts"])

    def set(self, subject: str, kind: str, level: float) -> None:
        seconds, micros = self.rds.time()
        self.rds.hset(f"{self.prefix}{{{subject}}}:{kind}",
                      mapping={"level": level, "ts": seconds * 1_000_000 + micros})

    def exists(self, subject: str, kind: str = "requests") -> bool:
        return bool(self.rds.exists(f"{self.prefix}{{{subject}}}:{kind}"))

    def now_us(self) -> int:
        seconds, micros = self.rds.time()
        return seconds * 1_000_000 + micros


@pytest.fixture
def buckets(rds, redis_prefix):
    return Buckets(rds, redis_prefix)


def test_headers_report_the_bucket_state(limited, make_key, buckets):
    limited(requests_per_minute=5, tokens_per_minute=100_000)
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    client = GatewayClient(issued.key)
    for expected_remaining in (4, 3, 2):
        response = client.get("/v1/models")
        assert response.status_code == 200
        level, _ = buckets.state(subject, "requests")
        assert response["x-ratelimit-limit-requests"] == "5"
        assert response["x-ratelimit-remaining-requests"] == str(expected_remaining) == str(math.floor(level))
        assert response["x-ratelimit-reset-requests"] == format_reset((5 - level) * 60 / 5)
        tokens, _ = buckets.state(subject, "tokens")
        assert response["x-ratelimit-limit-tokens"] == "100000"
        assert response["x-ratelimit-remaining-tokens"] == str(math.floor(tokens))
        assert response["x-ratelimit-reset-tokens"] == format_reset((100_000 - tokens) * 60 / 100_000)


def test_format_reset_uses_openai_durations():
    assert [format_reset(s) for s in (0, 0.0201, 1, 1.5, 12, 60, 360, 90.25)] == [
        "0ms", "21ms", "1s", "1.5s", "12s", "1m0s", "6m0s", "1m30.25s"]


def test_a_refusal_says_exactly_when_to_come_back(limited, make_key, buckets):
    limited(requests_per_minute=3)
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    client = GatewayClient(issued.key)
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
    level, stored_at = buckets.state(subject, "requests")
    before = buckets.now_us()
    refused = client.get("/v1/models")
    after = buckets.now_us()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert refused["x-ratelimit-remaining-requests"] == "0" and refused["x-ratelimit-limit-requests"] == "3"
    # wait = (1 - level at decision) / rate, the level having refilled since the stored timestamp.
    full_wait_ms = (1 - level) * 60_000 / 3
    wait_ms = int(refused["retry-after-ms"])
    assert full_wait_ms - (after - stored_at) / 1000 <= wait_ms <= full_wait_ms - (before - stored_at) / 1000 + 1
    assert int(refused["Retry-After"]) == math.ceil(wait_ms / 1000)
    # A refusal costs nothing: the bucket is as it was.
    assert buckets.state(subject, "requests") == (level, stored_at)


def test_retry_after_is_the_time_until_admission(limited, make_key, buckets):
    limited(requests_per_minute=60)  # one request a second
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    client = GatewayClient(issued.key)
    assert client.get("/v1/models").status_code == 200
    buckets.set(subject, "requests", 0.8)  # 200 ms short of one request
    refused = client.get("/v1/models")
    assert refused.status_code == 429
    wait_ms = int(refused["retry-after-ms"])
    assert 100 < wait_ms <= 200 and refused["Retry-After"] == "1"
    time.sleep(wait_ms / 1000)  # the contract under test is a duration
    assert client.get("/v1/models").status_code == 200


def test_tokens_are_reserved_then_reconciled_with_real_usage(limited, make_key, buckets, fake_openai):
    tpm = 50_000
    limited(requests_per_minute=100, tokens_per_minute=tpm)
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    client = GatewayClient(issued.key)
    fake_openai.steps.append(Reply(prompt_tokens=120, completion_tokens=30))
    response = client.create(model="gpt-test", input="count my tokens", max_output_tokens=700, stream=True)
    # Before the stream is consumed, the reservation is held: body estimate + max_output_tokens.
    body_bytes = len(response.wsgi_request.body)
    reserved = body_bytes // 4 + 1 + 700
    held, held_at = buckets.state(subject, "tokens")
    assert held == pytest.approx(tpm - reserved, abs=1e-3)
    assert response["x-ratelimit-remaining-tokens"] == str(tpm - reserved)
    events = sse_events(response)
    assert events[-1]["response"]["usage"]["total_tokens"] == 150
    settled, settled_at = buckets.state(subject, "tokens")
    refill = (settled_at - held_at) * tpm / 60_000_000
    assert settled == pytest.approx(min(tpm, held + refill + reserved - 150), abs=1e-3)


def test_json_responses_reconcile_and_the_default_max_output_is_reserved(limited, make_key, buckets, fake_openai):
    tpm = 50_000
    limited(tokens_per_minute=tpm, default_max_output_tokens=2000)
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    fake_openai.steps.append(Reply(prompt_tokens=40, completion_tokens=2))
    started = buckets.now_us()
    response = GatewayClient(issued.key).create(model="gpt-test", input="hello")
    elapsed_us = buckets.now_us() - started
    assert response.status_code == 200
    reserved = len(response.wsgi_request.body) // 4 + 1 + 2000
    # The header reports the state at admission (reservation held); the bucket now holds only the real usage.
    assert response["x-ratelimit-remaining-tokens"] == str(tpm - reserved)
    settled, _ = buckets.state(subject, "tokens")
    # Charged exactly the 42 used, plus whatever refilled while the request ran.
    assert tpm - 42 - 1e-3 <= settled <= tpm - 42 + elapsed_us * tpm / 60_000_000 + 1e-3


def test_an_upstream_error_gives_the_reservation_back(limited, make_key, buckets, fake_openai):
    tpm = 50_000
    limited(tokens_per_minute=tpm)
    issued = make_key()
    fake_openai.steps.append(Fail(400, "bad request upstream", type="invalid_request_error"))
    assert GatewayClient(issued.key).create(model="gpt-test", input="hello").status_code == 400
    settled, _ = buckets.state(f"key:{issued.record.pk}", "tokens")
    assert settled == pytest.approx(tpm, abs=1e-3)


def test_a_held_token_reservation_refuses_with_type_tokens(limited, make_key):
    limited(requests_per_minute=100, tokens_per_minute=1000)
    client = GatewayClient(make_key().key)
    first = client.create(model="demo", input="hi", max_output_tokens=900, stream=True)
    assert first.status_code == 200  # its reservation is held until the stream ends
    second = client.create(model="demo", input="hi", max_output_tokens=900)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "tokens"
    assert int(second["retry-after-ms"]) > 0
    sse_events(first)  # the demo model used a few dozen tokens: the rest comes back
    assert client.create(model="demo", input="hi", max_output_tokens=900).status_code == 200


def test_per_key_limits_override_the_global_ones(limited, make_key):
    limited(requests_per_minute=100, tokens_per_minute=100_000)
    strict = GatewayClient(make_key(rpm=2, tpm=5000).key)
    normal = GatewayClient(make_key().key)
    responses = [strict.get("/v1/models") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0]["x-ratelimit-limit-requests"] == "2" and responses[0]["x-ratelimit-limit-tokens"] == "5000"
    other = normal.get("/v1/models")
    assert other.status_code == 200 and other["x-ratelimit-limit-requests"] == "100"


def test_failed_auth_is_limited_per_address_whatever_the_key(limited, make_key, buckets):
    limited(requests_per_minute=3)
    statuses = [GatewayClient(f"gwk_bad{i}_x", REMOTE_ADDR="198.51.100.7").get("/v1/models").status_code
                for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert buckets.exists("ip:198.51.100.7")
    # The address's failures do not lock out a valid key behind the same NAT.
    assert GatewayClient(make_key().key, REMOTE_ADDR="198.51.100.7").get("/v1/models").status_code == 200


def test_anonymous_traffic_is_limited_per_address(limited):
    limited(auth=False, requests_per_minute=2)
    a = GatewayClient(REMOTE_ADDR="192.0.2.1")
    b = GatewayClient(REMOTE_ADDR="192.0.2.2")
    assert [a.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]
    assert b.get("/v1/models").status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(limited, buckets):
    limited(auth=False, requests_per_minute=2, trusted_proxies=["10.0.0.0/8"])
    proxy = GatewayClient(REMOTE_ADDR="10.0.0.5")
    proxy.get("/v1/models", headers={"X-Forwarded-For": "203.0.113.9"})
    assert buckets.exists("ip:203.0.113.9") and not buckets.exists("ip:10.0.0.5")
    # The client's own (spoofable) entries are left of the last untrusted hop, and ignored.
    proxy.get("/v1/models", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.10, 10.0.0.7"})
    assert buckets.exists("ip:203.0.113.10") and not buckets.exists("ip:6.6.6.6")
    # From an untrusted peer the header is ignored, so rotating it gains nothing.
    direct = GatewayClient(REMOTE_ADDR="192.0.2.77")
    statuses = [direct.get("/v1/models", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(100, 103)]
    assert statuses == [200, 200, 429]
    assert buckets.exists("ip:192.0.2.77") and not buckets.exists("ip:203.0.113.100")


def test_probes_are_not_rate_limited(limited):
    limited(auth=False, requests_per_minute=1)
    client = GatewayClient()
    assert [client.get("/health").status_code for _ in range(3)] == [200, 200, 200]
    assert "x-ratelimit-limit-requests" not in client.get("/health")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rejections_and_decision_latency_are_measured(limited, make_key):
    limited(requests_per_minute=1)
    client = GatewayClient(make_key().key)
    rejected = _sample("rate_limit_rejections_total", scope="requests")
    decided = _sample("rate_limit_decision_seconds_count")
    assert [client.get("/v1/models").status_code for _ in range(2)] == [200, 429]
    assert _sample("rate_limit_rejections_total", scope="requests") == rejected + 1
    assert _sample("rate_limit_decision_seconds_count") == decided + 2


def test_without_redis_the_buckets_live_in_the_process(configure, settings, make_key):
    settings.REDIS_URL = ""
    configure(auth={"enabled": True}, rate_limit={"enabled": True, "requests_per_minute": 2})
    client = GatewayClient(make_key().key)
    responses = [client.get("/v1/models") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1]["x-ratelimit-remaining-requests"] == "0"


def test_local_buckets_reserve_and_reconcile():
    local = LocalBuckets()
    limits = Limits(rpm=10, tpm=1000)
    first = local.acquire("s", limits, requests=1, tokens=800)
    assert first.admitted and first.tokens is not None and first.tokens.remaining == 200
    assert first.reserved_tokens == 800
    refused = local.acquire("s", limits, requests=1, tokens=800)
    assert not refused.admitted and refused.scope == "tokens"
    assert refused.retry_after == pytest.approx((800 - 200) * 60 / 1000, abs=0.05)
    local.reconcile("s", 1000, 800 - 50)  # only 50 were used
    assert local.acquire("s", limits, requests=1, tokens=800).admitted


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_stopped_mid_test(configure, settings, make_key, private_redis, caplog, fail_open):
    settings.REDIS_URL = private_redis.url
    configure(auth={"enabled": True}, rate_limit={"enabled": True, "requests_per_minute": 100,
                                                   "fail_open": fail_open, "redis_timeout": 0.2})
    client = GatewayClient(make_key().key)
    ok = client.get("/v1/models")
    assert ok.status_code == 200 and ok["x-ratelimit-limit-requests"] == "100"
    private_redis.stop()
    outcome = "fail_open" if fail_open else "fail_closed"
    errors_before = _sample("rate_limit_backend_errors_total", outcome=outcome)
    with caplog.at_level(logging.ERROR, logger="identity_app.limiter"):
        responses = [client.get("/v1/models") for _ in range(3)]
    assert _sample("rate_limit_backend_errors_total", outcome=outcome) == errors_before + 3
    incident_lines = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(incident_lines) == 1  # one line per incident, not per request
    if fail_open:
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert all("x-ratelimit-limit-requests" not in r for r in responses)
    else:
        assert [r.status_code for r in responses] == [503, 503, 503]
        assert responses[0].json()["error"]["code"] == "rate_limit_unavailable"
    # Back again: limits (and headers) return, and the recovery is logged once.
    private_redis.start()
    with caplog.at_level(logging.WARNING, logger="identity_app.limiter"):
        back = client.get("/v1/models")
    assert back.status_code == 200 and back["x-ratelimit-limit-requests"] == "100"
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1


def test_an_oversized_body_is_still_a_413(limited, make_key):
    limited(tokens_per_minute=100_000)
    response = GatewayClient(make_key().key).create(model="demo", input="x" * 70_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_refused_model_is_charged_to_the_identity_not_the_address(limited, make_key, buckets):
    limited(requests_per_minute=10)
    issued = make_key(allowed_models=["demo"])
    response = GatewayClient(issued.key).create(model="gpt-test", input="hi")
    assert response.status_code == 400 and response["x-ratelimit-remaining-requests"] == "9"
    assert buckets.exists(f"key:{issued.record.pk}") and not buckets.exists("ip:127.0.0.1")


def test_a_stream_the_client_abandons_is_settled_when_it_closes(limited, make_key, buckets):
    tpm = 50_000
    limited(tokens_per_minute=tpm)
    issued = make_key()
    response = GatewayClient(issued.key).create(model="demo", input="one two three four", stream=True)
    ticket = notes_of(response.wsgi_request).rate_ticket
    # response.created, then the client goes away (django-stubs types the test client's responses as
    # non-streaming).
    next(sse_frames(response.streaming_content))  # type: ignore[attr-defined]
    assert not ticket.settled
    response.close()
    assert ticket.settled and ticket.reported
    # The turn ended before the provider reported usage: the reservation stands as the charge.
    held, _ = buckets.state(f"key:{issued.record.pk}", "tokens")
    assert held <= tpm - ticket.decision.reserved_tokens + 5


def test_an_input_token_count_is_one_request_and_no_tokens(limited, make_key, buckets):
    limited(requests_per_minute=10, tokens_per_minute=1000)
    issued = make_key()
    subject = f"key:{issued.record.pk}"
    client = GatewayClient(issued.key)
    body = json.dumps({"model": "demo", "input": "count " * 2000})  # ~3,000 tokens of body: over the tpm
    response = client.client.post("/v1/responses/input_tokens", data=body, content_type="application/json")
    assert response.status_code == 200 and response.json()["input_tokens"] > 1000
    assert response["x-ratelimit-remaining-requests"] == "9"
    assert response["x-ratelimit-remaining-tokens"] == "1000"
    tokens, _ = buckets.state(subject, "tokens")
    assert tokens == pytest.approx(1000, abs=1e-3)


@pytest.mark.parametrize("stream", [False, True])
def test_an_admitted_request_is_freed_once_answered(limited, make_key, stream):
    # The notes of a request hold its rate gate, which holds the request: kept in a WeakKeyDictionary
    # keyed by the request, that cycle kept every create alive for good (a worker grew ~7 MB per
    # 1,000 requests). Once answered and dropped, the request must be collectable.
    limited(requests_per_minute=1_000, tokens_per_minute=1_000_000)
    client = GatewayClient(make_key().key)
    response = client.create(model="demo", input="hi", stream=stream)
    assert response.status_code == 200
    if stream:
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert notes_of(response.wsgi_request).rate_gate is not None  # admitted through the gate
    request = weakref.ref(response.wsgi_request)
    response.close()
    del response
    gc.collect()
    assert request() is None, [type(r).__name__ for r in gc.get_referrers(request())]
