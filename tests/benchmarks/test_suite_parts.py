"""The benchmark suite's pure parts, so that benchmarks/suite.py cannot rot unnoticed: its nginx
upstream (the openai SDK accepts every body in strict mode, and the gateway serves them), the
reading of hey's CSV, and the report's helpers. Needs Debian's nginx, which scripts/test
installs; not hey (the CSV is a recorded one), so nothing here skips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from benchmarks.hey_load import parse_csv
from benchmarks.nginx_upstream import LONG_TEXT, LONG_WORDS, TEXT, WORDS, NginxUpstream
from benchmarks.suite import LONG_PROMPT, MARKERS, QUICK, load_points, spread, table_head, write_markdown
from tests.conftest import ApiClient, gateway_config_for, sse_events

# Recorded from `hey -n 4 -c 2 -o csv` (hey 0.1.4, Debian 12): one 200 over a fresh connection, a
# reused one, a 500; the fourth request was refused, so it has no row.
HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.0027,0.0007,0.0000,0.0004,0.0015,0.0001,200,0.0016
0.0019,0.0000,0.0000,0.0001,0.0017,0.0001,200,0.0025
0.0040,0.0000,0.0000,0.0000,0.0038,0.0002,500,0.0044
"""


@pytest.fixture(scope="module")
def nginx() -> Iterator[NginxUpstream]:
    with NginxUpstream() as upstream:
        yield upstream


def strict_client(url: str) -> OpenAI:
    # Strict: a missing or mistyped field fails, as it would for a body OpenAI never sends.
    return OpenAI(base_url=url, api_key="x", max_retries=0, _strict_response_validation=True)


def serve_the_suites_models(settings: Any, nginx: NginxUpstream, size: str = "") -> None:
    """The gateway's models as suite.py names them (`bench-nginx-json`, `bench-nginx-long-sse`, ...),
    each on its nginx location."""
    config = gateway_config_for(f"{nginx.url}/json")
    provider = config.providers["openai"]
    path, name = (f"/{size}", f"-{size}") if size else ("", "")
    settings.GATEWAY = config.model_copy(update={
        "providers": {prefix: provider.model_copy(update={"endpoint": f"{nginx.url}/{prefix}{path}/v1"})
                      for prefix in ("json", "sse")},
        "models": [config.models[0].model_copy(update={"name": f"bench-nginx{name}-{prefix}", "provider": prefix})
                   for prefix in ("json", "sse")]})


def stream_data(url: str, body: dict[str, Any]) -> list[Any]:
    """The JSON of every `data:` line of a streamed answer, up to `[DONE]`."""
    response = httpx.post(url, json=body, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    data = [line.removeprefix("data: ") for line in response.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]" if "chat" in url else "[DONE]" not in data
    return [json.loads(item) for item in data if item != "[DONE]"]


def test_chat_completions_json_and_stream_are_what_the_sdk_accepts(nginx):
    json_ = strict_client(f"{nginx.url}/json/v1").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}])
    assert json_.choices[0].message.content == TEXT and json_.usage is not None

    chunks = [ChatCompletionChunk.model_validate(chunk) for chunk in stream_data(
        f"{nginx.url}/sse/v1/chat/completions", {"model": "m", "messages": [], "stream": True})]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_the_long_answers_are_what_the_sdk_accepts_with_a_chunk_per_word(nginx):
    assert len(LONG_WORDS) == 300 and len(LONG_TEXT.split()) == 300 and len(LONG_PROMPT.split()) == 100
    json_ = strict_client(f"{nginx.url}/json/long/v1").chat.completions.create(
        model="m", messages=[{"role": "user", "content": LONG_PROMPT}])
    assert json_.choices[0].message.content == LONG_TEXT
    assert json_.usage is not None and json_.usage.completion_tokens == 300

    chunks = [ChatCompletionChunk.model_validate(chunk) for chunk in stream_data(
        f"{nginx.url}/sse/long/v1/chat/completions", {"model": "m", "messages": [], "stream": True})]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == 300 and "".join(contents) == LONG_TEXT


@pytest.mark.django_db
def test_the_gateway_serves_every_long_point_of_the_suite(settings, nginx):
    """The `long` scenario's points (c=1 and 10, JSON and SSE) through the gateway: the whole answer,
    and the turn stored with its 100-word input."""
    serve_the_suites_models(settings, nginx, "long")
    points = load_points(["long"], QUICK, SimpleNamespace(nginx=nginx))  # type: ignore[arg-type]
    assert sorted((p.label, p.concurrency) for p in points) == [
        ("non-streamed, 100 + 300 words", 1), ("non-streamed, 100 + 300 words", 10),
        ("streamed, 100 + 300 words", 1), ("streamed, 100 + 300 words", 10)]
    for point in points[::2]:
        answer = ApiClient().post("/v1/responses", point.gateway_body)
        assert answer.status_code == 200, (point.label, answer.content[:300])
        if answer.streaming:
            completed = sse_events(answer)[-1]
            assert completed["type"] == "response.completed"
            body = completed["response"]
        else:
            body = answer.json()
        assert body["output"][0]["content"][0]["text"] == LONG_TEXT
        stored = ApiClient().get(f"/v1/responses/{body['id']}/input_items").json()
        assert stored["data"][0]["content"][0]["text"] == LONG_PROMPT


def test_responses_json_and_stream_are_what_the_sdk_accepts(nginx):
    response = strict_client(f"{nginx.url}/json/v1").responses.create(model="m", input="hi")
    assert response.output_text == TEXT

    # Every event as the SDK's union of stream events validates it (by `type`).
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    events = [adapter.validate_python(event)
              for event in stream_data(f"{nginx.url}/sse/v1/responses", {"model": "m", "stream": True})]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == TEXT


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.django_db
def test_the_gateway_serves_the_nginx_bodies(settings, nginx, api):
    def gateway_on(prefix: str) -> None:
        config = gateway_config_for(f"{nginx.url}/{prefix}")
        settings.GATEWAY = config.model_copy(update={"providers": {
            **config.providers, "openai": config.providers["openai"].model_copy(update={"api": api})}})

    gateway_on("json")
    created = ApiClient().create(model="gpt-test", input="hi")
    assert created.status_code == 200, created.content
    assert created.json()["output"][0]["content"][0]["text"] == TEXT

    gateway_on("sse")
    events = sse_events(ApiClient().create(model="gpt-test", input="hi", stream=True))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == TEXT


@pytest.mark.django_db
def test_the_gateway_serves_every_surface_point_of_the_suite(settings, nginx):
    """The `surfaces` scenario's bodies, each through its API surface, against the nginx bodies:
    a 200 with the whole answer in that surface's shape, so the scenario never measures errors."""
    serve_the_suites_models(settings, nginx)
    points = load_points(["surfaces"], QUICK, SimpleNamespace(nginx=nginx))  # type: ignore[arg-type]
    assert sorted(p.gateway_path for p in points) == sorted(["responses", "responses", "chat/completions",
                                                             "messages"] * 2)
    for point in points:
        answer = ApiClient().post(f"/v1/{point.gateway_path}", point.gateway_body)
        assert answer.status_code == 200, (point.label, answer.content[:300])
        text = b"".join(answer.streaming_content) if answer.streaming else answer.content  # type: ignore[attr-defined]
        # The words arrive whole in a JSON answer, one per delta in a stream.
        assert all(word.strip().encode() in text for word in WORDS), (point.label, text[:300])


def test_hey_csv_counts_answers_errors_and_time_to_first_byte():
    result = parse_csv(HEY_CSV, expected=4)
    assert result.answered == 3
    assert result.errors == 2  # the 500 and the refused request
    assert result.failures() == {"no answer": 1, "500": 1}
    assert result.latencies() == [0.0027, 0.0019, 0.0040]
    assert result.first_bytes() == pytest.approx([0.0026, 0.0018, 0.0038])
    assert result.wall == pytest.approx(0.0084)
    assert result.per_second == pytest.approx(3 / 0.0084)


def test_hey_csv_refuses_hey_s_summary():
    with pytest.raises(ValueError, match="not hey's CSV"):
        parse_csv("Summary:\n  Total:\t0.0017 secs\n", expected=1)


def test_spread_is_the_median_with_min_and_max():
    assert spread([3.0, 1.0, 2.0]) == "2.0 (1.0-3.0)"
    assert spread([2.0, None]) == "2.0"
    assert spread([None]) == "-"


def test_table_head_aligns_the_figures_right():
    assert table_head("scenario", "p50 ms", "req/s") == ["| scenario | p50 ms | req/s |", "|---|---:|---:|"]


def test_markdown_replaces_only_the_suite_section(tmp_path: Path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\nbefore\n\n{MARKERS[0]}\nold\n{MARKERS[1]}\n\nafter\n")
    write_markdown(results, "new | table")
    assert results.read_text() == f"# Results\n\nbefore\n\n{MARKERS[0]}\nnew | table\n{MARKERS[1]}\n\nafter\n"
