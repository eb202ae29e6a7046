"""The fuzz harness: send one case through Django's test client and check the properties that
must hold for every request, whatever it carries.

- The status is never 5xx (nothing here scripts the fake upstream to fail).
- Every non-2xx answer is exactly `{"error": {"message": str, "type": str, "param": str|null,
  "code": str|null}}` with a JSON content type, and a `param` names a parameter (never '' nor a
  pydantic union branch such as `dict[str,any]`); on /v1/messages* it is Anthropic's
  `{"type": "error", "error": {"type": str, "message": str}}`.
- A method a route does not serve is a 405 with `Allow`.
- Only an accepted (2xx) create may add rows to the conversations tables or reach the upstream;
  an accepted create with `store: false` adds no rows either. On the Conversations API only an
  accepted POST or DELETE may change rows, and nothing there reaches the upstream.
- An accepted stream parses as SSE and ends with exactly one terminal event; an accepted JSON
  create is a Response object, and a stored one can be retrieved with its input items.
- An accepted /v1/messages is a Message as the anthropic SDK parses it, or a stream from
  `message_start` to `message_stop` (or `error`), and stores nothing (the default config).
- An accepted /v1/chat/completions is a ChatCompletion as the openai SDK (strict) and the OpenAPI
  spec have it, or a stream of `data:` chunks (no `event:` lines), each a ChatCompletionChunk of
  one id, ending with `data: [DONE]` or an error chunk; it stores nothing unless the body says
  `store: true`, and then exactly one response, `resp_<hex>` for `chatcmpl-<hex>`, retrievable.

Each case runs in a savepoint that is rolled back, so every case starts from the same database
(the seeded response is always there, never deleted by an earlier case), and the cases, being
derandomized, are the same on every run. How many ran, per endpoint, is printed at the end of
the session and written to var/fuzz/cases.json.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse
from gateway_project.api_errors import is_anthropic_path
from responses_app import schema
from surfaces_app.chat_completions import schema as chat_schema
from tests.conftest import gateway_config_for
from tests.contract import validate
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.fuzz.strategies import (
    EXISTING,
    EXISTING_CONVERSATION,
    EXISTING_CONVERSATION_ITEM,
    EXISTING_ITEM,
    content_types,
    encode_json,
    fill_in,
    raw_bodies,
)

REPORT = Path(__file__).resolve().parents[2] / "var" / "fuzz" / "cases.json"

# The same cases on every run (derandomized, no example database) and no deadline (a case that
# waits on the loopback upstream is not a bug). Large and slow-to-draw cases are the point here.
# FUZZ_RANDOM=1 draws new cases on every run instead (a failure prints a blob to reproduce it).
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
FUZZ = settings(derandomize=not RANDOM, database=None, deadline=None, print_blob=RANDOM,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# FUZZ_SCALE=10 (in the environment) sends ten times as many cases: for hunting, not for CI.
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def scaled(examples: int) -> int:
    return max(1, round(examples * FUZZ_SCALE))


def run_examples(fuzz: Any, examples: int) -> None:
    """Run a Hypothesis test and check that (nearly) all its examples were sent: a change that made
    the strategies reject most of what they draw must not pass as a fuzz run."""
    before = sum(CASES.values())
    fuzz()
    assert sum(CASES.values()) - before >= 0.9 * examples


def post_json_bodies(fuzzer: Fuzzer, path: str, bodies: st.SearchStrategy[Any], examples: int, *,
                     any_content_type: bool = True) -> None:
    """POST `examples` bodies drawn from `bodies` to `path` as JSON text (ASCII or not), with any
    content type (or `application/json`)."""
    @settings(FUZZ, max_examples=examples)
    @given(body=bodies, ascii_only=st.booleans(),
           content_type=content_types if any_content_type else st.just("application/json"))
    def fuzz(body: Any, ascii_only: bool, content_type: str | None) -> None:
        fuzzer.send("POST", path, body=encode_json(body, ascii_only=ascii_only), content_type=content_type)

    run_examples(fuzz, examples)


def post_raw_bodies(fuzzer: Fuzzer, paths: list[str], examples: int,
                    valid: st.SearchStrategy[dict[str, Any]] | None = None) -> None:
    """POST `examples` raw bodies (strategies.raw_bodies, made from `valid`) to one of `paths`."""
    @settings(FUZZ, max_examples=examples)
    @given(raw=raw_bodies(valid), path=st.sampled_from(paths))
    def fuzz(raw: tuple[bytes, str], path: str) -> None:
        fuzzer.send("POST", path, body=raw[0], content_type="application/json")

    run_examples(fuzz, examples)


TERMINAL_EVENTS = {"response.completed", "response.failed", "response.incomplete"}

# Cases sent, by endpoint ("POST /v1/responses", "other methods /health", ...), and seconds per test.
CASES: Counter[str] = Counter()
# ... and how many of them were answered 2xx (accepted) and 4xx (refused).
ANSWERS: Counter[tuple[str, str]] = Counter()
SECONDS: dict[str, float] = {}


# One round trip for the counts: they are taken twice per case, and were half its queries.
_TABLES = [model._meta.db_table for model in (Conversation, StoredResponse, Item, ConversationItem)]
_ROWS_SQL = "SELECT " + ", ".join(f"(SELECT count(*) FROM {table})" for table in _TABLES)  # noqa: S608 - the models' tables


def _rows() -> tuple[int, ...]:
    with connection.cursor() as cursor:
        cursor.execute(_ROWS_SQL)
        return tuple(cursor.fetchone())


# The API's routes (by URL name) and the methods each one serves.
ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "create_response": ("/v1/responses", ("POST",)),
    "count_input_tokens": ("/v1/responses/input_tokens", ("POST",)),
    "response_detail": ("/v1/responses/{id}", ("GET", "HEAD", "DELETE")),
    "response_input_items": ("/v1/responses/{id}/input_items", ("GET", "HEAD")),
    "cancel_response": ("/v1/responses/{id}/cancel", ("POST",)),
    "list_models": ("/v1/models", ("GET", "HEAD")),
    "model_detail": ("/v1/models/{id}", ("GET", "HEAD")),
    "health": ("/health", ("GET", "HEAD")),
    "ready": ("/ready", ("GET", "HEAD")),
    "metrics": ("/metrics", ("GET", "HEAD")),
    "create_conversation": ("/v1/conversations", ("POST",)),
    "conversation_detail": ("/v1/conversations/{id}", ("GET", "HEAD", "POST", "DELETE")),
    "conversation_items": ("/v1/conversations/{id}/items", ("GET", "HEAD", "POST")),
    "conversation_item": ("/v1/conversations/{id}/items/{item_id}", ("GET", "HEAD", "DELETE")),
    "messages": ("/v1/messages", ("POST",)),
    "messages-count-tokens": ("/v1/messages/count_tokens", ("POST",)),
    "create_chat_completion": ("/v1/chat/completions", ("POST",)),
}
CHAT = "/v1/chat/completions"
COMPLETION_ID = re.compile(r"chatcmpl-[0-9a-f]{48}")


def route_of(path_info: str) -> tuple[str, tuple[str, ...]]:
    """The route a path resolves to and its methods; `(no route)` for a 404 path."""
    try:
        match = resolve(path_info)
    except Resolver404:
        return "(no route)", ()
    assert match.url_name in ROUTES, f"the fuzz reached {path_info!r} ({match.url_name}), outside the API"
    return ROUTES[match.url_name]


class Fuzzer:
    def __init__(self, fake_openai: FakeOpenAI, known: dict[str, str]) -> None:
        self.client = Client()
        self.fake = fake_openai
        self.known = known

    def send(self, method: str, path: bytes | str, *, query: str = "", body: bytes = b"",
             content_type: str | None = None) -> Any:
        """Send one case and check every property; returns the response (already checked)."""
        raw_path = path if isinstance(path, bytes) else path.encode("utf-8", "surrogatepass")
        # PATH_INFO as a WSGI server builds it: the percent-decoded bytes, read as Latin-1.
        path_info = fill_in(raw_path.decode("latin-1"), self.known)
        query = fill_in(query, self.known)
        body = fill_in(body.decode("latin-1"), self.known).encode("latin-1")
        route, allowed = route_of(path_info)
        label = f"{'any method' if not allowed else method if method in allowed else 'other methods'} {route}"
        CASES[label] += 1
        is_create = route == "/v1/responses" and method == "POST"
        is_message = route == "/v1/messages" and method == "POST"
        is_chat = route == CHAT and method == "POST"
        # The Conversations API's writes: accepted, they change rows (and never call the upstream).
        is_conversation_write = route.startswith("/v1/conversations") and method in ("POST", "DELETE")
        with transaction.atomic():
            rows_before, upstream_before = _rows(), len(self.fake.requests)
            response = self.client.generic(method, "/", data=body, PATH_INFO=path_info, QUERY_STRING=query,
                                           CONTENT_TYPE="" if content_type is None else content_type)
            status = response.status_code
            ANSWERS[label, f"{status // 100}xx"] += 1
            where = f"{method} {path_info[:200]!r}?{query[:200]!r} -> {status}"
            events = _sse_events(response, where, named=route != CHAT) if response.streaming else None
            assert status < 500, f"{where}: {_excerpt(response)}"
            if not 200 <= status < 300:
                _check_error_shape(response, method, where, anthropic=is_anthropic_path(path_info))
            if allowed and method not in allowed:
                assert status == 405 and response.has_header("Allow"), f"{where}: an unsupported method"
            if is_create and 200 <= status < 300:
                self._check_accepted_create(response, events, rows_before, upstream_before, where)
            elif is_message and 200 <= status < 300:
                _check_accepted_message(response, events, where)
                assert _rows() == rows_before, f"{where}: a Messages call stored (store_stateless_calls is off)"
            elif is_chat and 200 <= status < 300:
                self._check_accepted_chat(response, events, body, rows_before, where)
            elif is_conversation_write and 200 <= status < 300:
                assert len(self.fake.requests) == upstream_before, f"{where}: the upstream was called"
                _check_json_or_metrics(response, where)
            elif events is not None:
                _check_replay(response, events, route, method, where)
                assert _rows() == rows_before, f"{where}: rows written by a replay"
                assert len(self.fake.requests) == upstream_before, f"{where}: the upstream was called"
            else:
                assert _rows() == rows_before, f"{where}: rows written for a request that created nothing"
                assert len(self.fake.requests) == upstream_before, f"{where}: the upstream was called"
                if 200 <= status < 300 and method != "HEAD":
                    _check_json_or_metrics(response, where)
            transaction.set_rollback(True)
        return response

    def _check_accepted_create(self, response: Any, events: list[dict[str, Any]] | None,
                               rows_before: tuple[int, ...], upstream_before: int, where: str) -> None:
        if events is not None:
            assert response["Content-Type"] == "text/event-stream", where
            assert events, f"{where}: an empty stream"
            assert events[0]["type"] == "response.created", f"{where}: first event {events[0]['type']}"
            assert [e["sequence_number"] for e in events] == list(range(len(events))), where
            terminal = [e["type"] for e in events if e["type"] in TERMINAL_EVENTS]
            assert len(terminal) == 1 and events[-1]["type"] in TERMINAL_EVENTS, f"{where}: terminal events {terminal}"
            final = events[-1]["response"]
        else:
            assert response["Content-Type"] == "application/json", where
            final = _strict_json(response.content, where)
        assert final["object"] == "response" and final["id"].startswith("resp_"), where
        if not final["store"]:
            assert _rows() == rows_before, f"{where}: store=false wrote rows"
            return
        retrieved = self.client.get(f"/v1/responses/{final['id']}")
        assert retrieved.status_code == 200, f"{where}: retrieve -> {retrieved.status_code} {_excerpt(retrieved)}"
        assert _strict_json(retrieved.content, where)["id"] == final["id"]
        items = self.client.get(f"/v1/responses/{final['id']}/input_items", {"order": "asc", "limit": "100"})
        assert items.status_code == 200, f"{where}: input_items -> {items.status_code} {_excerpt(items)}"
        assert _strict_json(items.content, where)["object"] == "list"

    def _check_accepted_chat(self, response: Any, events: list[dict[str, Any]] | None, body: bytes,
                             rows_before: tuple[int, ...], where: str) -> None:
        if events is None:
            assert response["Content-Type"] == "application/json", where
            completion = _strict_json(response.content, where)
            validate("ChatCompletion", completion)
            ids = {completion["id"]}
        else:
            assert response["Content-Type"] == "text/event-stream", where
            assert events and (events[-1] is DONE or set(events[-1]) == {"error"}), f"{where}: ends {events[-1:]}"
            if events[-1] is not DONE:
                _check_error_body(events[-1], where)
            for chunk in events[:-1]:
                assert chunk is not DONE and "error" not in chunk, f"{where}: {chunk} before the end"
                validate("ChatCompletionChunk", chunk)
            ids = {chunk["id"] for chunk in events[:-1]}
            assert len(ids) == 1 or (not ids and events[-1] is not DONE), f"{where}: ids {ids}"
        assert all(COMPLETION_ID.fullmatch(id_) for id_ in ids), f"{where}: ids {ids}"
        # The body was accepted, so it is a JSON object in UTF-8 (a BOM skipped).
        store = json.loads(body.decode("utf-8").removeprefix("\ufeff")).get("store") is True
        rows = _rows()
        if not store:
            assert rows == rows_before, f"{where}: a chat completion without store: true wrote rows"
            return
        # One stored response (and its items), the root of a chain (a Conversation) of its own.
        conversations, responses, _items, conversation_items = rows
        expected = (rows_before[0] + 1, rows_before[1] + 1, rows_before[3])
        assert (conversations, responses, conversation_items) == expected, f"{where}: rows {rows_before} -> {rows}"
        assert len(ids) == 1, f"{where}: store: true and no completion id"
        (completion_id,) = ids
        response_id = "resp_" + completion_id.removeprefix("chatcmpl-")
        retrieved = self.client.get(f"/v1/responses/{response_id}")
        assert retrieved.status_code == 200, f"{where}: retrieve -> {retrieved.status_code} {_excerpt(retrieved)}"
        assert _strict_json(retrieved.content, where)["id"] == response_id, where


def _check_accepted_message(response: Any, events: list[dict[str, Any]] | None, where: str) -> None:
    """An accepted /v1/messages: a Message as the anthropic SDK parses it, or its stream from
    `message_start` to `message_stop` (or an `error` event)."""
    if events is None:
        assert response["Content-Type"] == "application/json", where
        anthropic.types.Message.model_validate(_strict_json(response.content, where), strict=True)
        return
    assert response["Content-Type"] == "text/event-stream", where
    assert events and events[0]["type"] == "message_start", f"{where}: {events[:1]}"
    assert events[-1]["type"] in ("message_stop", "error"), f"{where}: last event {events[-1]['type']}"


def _check_replay(response: Any, events: list[dict[str, Any]], route: str, method: str, where: str) -> None:
    """GET /v1/responses/{id}?stream=true: the stored (settled) response's events after
    `starting_after`, numbered in order, ending with its one terminal event."""
    assert (route, method) == ("/v1/responses/{id}", "GET"), f"{where}: a stream from {route}"
    assert response["Content-Type"] == "text/event-stream", where
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True, where
    terminal = [e["type"] for e in events if e["type"] in TERMINAL_EVENTS]
    assert not events or (terminal == [events[-1]["type"]]), f"{where}: terminal events {terminal}"


def _strict_json(content: bytes, where: str) -> Any:
    """Parsed as RFC 8259 JSON: UTF-8, no NaN or Infinity literals."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{where}: {name} in a JSON answer")

    return json.loads(content.decode("utf-8"), parse_constant=refuse)


def _excerpt(response: Any) -> str:
    if response.streaming:
        return "<stream>"
    return response.content[:500].decode("utf-8", "replace")


def _check_error_shape(response: Any, method: str, where: str, *, anthropic: bool = False) -> None:
    assert response["Content-Type"] == "application/json", f"{where}: content type {response['Content-Type']!r}"
    if method == "HEAD":
        return  # the test client drops a HEAD answer's body, as servers do
    body = _strict_json(response.content, where)
    if anthropic:  # Anthropic's Messages API (docs/anthropic-messages.md)
        assert isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error", where
        assert set(body["error"]) == {"type", "message"} and body["error"]["message"], f"{where}: {body}"
        return
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {_excerpt(response)}"
    _check_error_body(body, where)


def _check_error_body(body: dict[str, Any], where: str) -> None:
    """OpenAI's `{"error": {...}}` (an error answer, or a Chat stream's last chunk)."""
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, f"{where}: {error}"
    assert isinstance(error["message"], str) and error["message"], f"{where}: {error}"
    assert isinstance(error["type"], str) and error["type"], f"{where}: {error}"
    assert error["param"] is None or isinstance(error["param"], str), f"{where}: {error}"
    assert error["param"] is None or _names_a_parameter(error["param"]), f"{where}: param {error['param']!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"{where}: {error}"


# What pydantic puts in an error location besides parameter names: union branches (`str`,
# `dict[str,any]`, `literal['auto',...]`, a model's class name) and discriminator tags. A `param`
# made of those points the caller at nothing. A union branch never comes first (it follows the
# parameter it is a branch of), so a first segment that is a bare type name (`none`) is a key the
# client sent: random runs do send one. (A client could send a longer key spelled like a label;
# the fuzz does not.)
_MODEL_NAMES = {name for module in (schema, chat_schema) for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, BaseModel)}
_TYPE_LABEL = re.compile(r"^(str|int|float|bool|none)$|^(dict|list|literal|tagged-union|function-\w+|json-or-python)\[")
_SCALAR_LABEL = re.compile(r"^(str|int|float|bool|none)$")


def _names_a_parameter(param: str) -> bool:
    if not param:
        return False
    first, *rest = [segment for segment in re.split(r"\.|\[\d+\]", param) if segment] or [""]
    if first in _MODEL_NAMES or (_TYPE_LABEL.match(first) and not _SCALAR_LABEL.match(first)):
        return False
    return not any(segment in _MODEL_NAMES or _TYPE_LABEL.match(segment) for segment in rest)


def _check_json_or_metrics(response: Any, where: str) -> None:
    if response["Content-Type"].startswith("text/plain"):  # the Prometheus exposition
        assert response.content.decode("utf-8"), where
        return
    assert response["Content-Type"] == "application/json", f"{where}: content type {response['Content-Type']!r}"
    _strict_json(response.content, where)


# `data: [DONE]`, the end of a Chat Completions stream, in the list `_sse_events` returns.
DONE: dict[str, Any] = {"[DONE]": True}


def _sse_events(response: Any, where: str, *, named: bool = True) -> list[dict[str, Any]]:
    """The events of a streamed answer, checking the framing (comments allowed: keep-alives):
    `event: <type>` and `data: <json>` frames, or (`named` False, Chat Completions) `data:` lines
    alone, the last maybe `data: [DONE]` (listed as DONE)."""
    raw = b"".join(response.streaming_content).decode("utf-8")
    assert "\r" not in raw, f"{where}: CR in a stream"
    events: list[dict[str, Any]] = []
    for frame in raw.split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        assert not events or events[-1] is not DONE, f"{where}: {frame!r} after [DONE]"
        lines = frame.split("\n")
        if named:
            framed = len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        else:
            framed = len(lines) == 1 and lines[0].startswith("data: ")
        assert framed, f"{where}: {frame!r}"
        text = lines[-1].removeprefix("data: ")
        if not named and text == "[DONE]":
            events.append(DONE)
            continue
        data = _strict_json(text.encode(), where)
        assert not named or lines[0].removeprefix("event: ") == data["type"], f"{where}: {frame!r}"
        events.append(data)
    # Empty is a whole stream: a replay after its last event (starting_after) has nothing to send.
    assert not raw or raw.endswith("\n\n"), f"{where}: the stream ends mid-frame"
    return events


FUZZ_GATEWAY_OBSERVABILITY = {"enabled": True, "metrics": {"enabled": True, "path": "/metrics"},
                              "tracing": {"enabled": False}}


@pytest.fixture
def fuzzer(db: None, settings: Any, fake_openai: FakeOpenAI, request: pytest.FixtureRequest) -> Iterator[Fuzzer]:
    """The suite's standard gateway (metrics on, so /metrics exists), with one stored response
    that ended in a function call: chains and its input items can be reached by the cases."""
    settings.GATEWAY = gateway_config_for(fake_openai.url, observability=FUZZ_GATEWAY_OBSERVABILITY)
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_seed", "name": "get_weather",
                                                   "arguments": "{\"city\": \"Paris\"}"}]))
    questions = [{"role": "user", "content": text} for text in ("Weather in Paris?", "And in Rome?", "Thanks.")]
    seed = Client().post("/v1/responses", data=json.dumps({"model": "gpt-test", "input": questions}),
                         content_type="application/json")
    assert seed.status_code == 200, seed.content
    response_id = seed.json()["id"]
    # The middle one: a page after it has items in either order.
    item_id = Client().get(f"/v1/responses/{response_id}/input_items").json()["data"][1]["id"]
    # And a conversation of the Conversations API with a few items, the middle one named.
    conversation = Client().post("/v1/conversations", data=json.dumps({"items": questions, "metadata": {"k": "v"}}),
                                 content_type="application/json")
    assert conversation.status_code == 200, conversation.content
    conversation_id = conversation.json()["id"]
    conversation_item = Client().get(f"/v1/conversations/{conversation_id}/items").json()["data"][1]["id"]
    fake_openai.reset()
    started = time.monotonic()
    yield Fuzzer(fake_openai, {EXISTING: response_id, EXISTING_ITEM: item_id, EXISTING_CONVERSATION: conversation_id,
                               EXISTING_CONVERSATION_ITEM: conversation_item})
    SECONDS[request.node.name] = time.monotonic() - started


def cases_for(test_prefix: str) -> int:
    return sum(n for label, n in CASES.items() if label.startswith(test_prefix))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES:
        return
    width = max(len(label) for label in CASES) + 2
    terminalreporter.section("fuzz cases (Hypothesis, derandomized)")
    terminalreporter.write_line(f"{'endpoint':<{width}}{'cases':>7}{'2xx':>7}{'4xx':>7}")
    labels = sorted(CASES, key=lambda label: (label.split(" ", 1)[1], label))
    for label in labels:
        terminalreporter.write_line(f"{label:<{width}}{CASES[label]:>7}{ANSWERS[label, '2xx']:>7}"
                                    f"{ANSWERS[label, '4xx']:>7}")
    total = sum(CASES.values())
    seconds = sum(SECONDS.values())
    accepted, refused = (sum(n for (_, kind), n in ANSWERS.items() if kind == k) for k in ("2xx", "4xx"))
    terminalreporter.write_line(f"{'total':<{width}}{total:>7}{accepted:>7}{refused:>7}  in {seconds:.1f} s")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = {label: {"cases": CASES[label], "2xx": ANSWERS[label, "2xx"], "4xx": ANSWERS[label, "4xx"]}
              for label in labels}
    REPORT.write_text(json.dumps({"endpoints": report, "total": total, "seconds": round(seconds, 1),
                                  "seconds_per_test": {k: round(v, 2) for k, v in SECONDS.items()}}, indent=2) + "\n")
