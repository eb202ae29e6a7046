"""Fuzz every endpoint and method with Hypothesis: hostile JSON, raw bytes, content types, mutations
of valid create bodies, path ids and query strings. The properties checked on every case are in
tests/fuzz/conftest.py (`Fuzzer.send`): no 5xx, every error in OpenAI's shape, nothing stored and no
upstream call unless a create was accepted, and accepted streams end with a terminal event.

The cases are derandomized (the same on every run); `max_examples` is sized so that the module
runs in well under a minute on the 2-core CI machine (FUZZ_SCALE=10 sends ten times as many).
The number of cases per endpoint is in the terminal summary and in var/fuzz/cases.json.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from responses_app import input_tokens
from tests.fuzz.conftest import FUZZ, Fuzzer, run_examples, scaled
from tests.fuzz.strategies import (
    EXISTING,
    EXISTING_CONVERSATION,
    EXISTING_CONVERSATION_ITEM,
    EXISTING_ITEM,
    VALID_BODIES,
    arbitrary_bodies,
    content_types,
    encode_json,
    hostile_text,
    hostile_values,
    json_values,
    methods,
    mutated_create_bodies,
    path_ids,
    query_strings,
    raw_bodies,
    short_text,
)

CREATE = "/v1/responses"
CREATE_FIELDS = sorted({key for body in VALID_BODIES for key in body} | {
    "stream", "store", "conversation", "background", "prompt", "prompt_cache_options", "prompt_cache_retention",
    "context_management", "moderation"})


# --- POST /v1/responses -------------------------------------------------------------------------

ARBITRARY_CREATE = arbitrary_bodies(CREATE_FIELDS, {
    "model": st.one_of(st.sampled_from(["gpt-test", "demo"]), hostile_text),
    "input": st.one_of(st.just("hi"), hostile_values)})


def test_create_with_arbitrary_json(fuzzer: Fuzzer) -> None:
    examples = scaled(350)

    @settings(FUZZ, max_examples=examples)
    @given(body=ARBITRARY_CREATE, ascii_only=st.booleans(), content_type=content_types)
    def fuzz(body: Any, ascii_only: bool, content_type: str | None) -> None:
        fuzzer.send("POST", CREATE, body=encode_json(body, ascii_only=ascii_only),
                    content_type=content_type)

    run_examples(fuzz, examples)


def test_create_with_raw_bytes(fuzzer: Fuzzer) -> None:
    examples = scaled(250)

    @settings(FUZZ, max_examples=examples)
    @given(raw=raw_bodies(), content_type=content_types)
    def fuzz(raw: tuple[bytes, str], content_type: str | None) -> None:
        body, _how = raw
        fuzzer.send("POST", CREATE, body=body, content_type=content_type)

    run_examples(fuzz, examples)


def test_create_with_one_field_of_a_valid_body_mutated(fuzzer: Fuzzer) -> None:
    examples = scaled(550)

    @settings(FUZZ, max_examples=examples)
    @given(mutated=mutated_create_bodies(), ascii_only=st.booleans())
    def fuzz(mutated: tuple[Any, str], ascii_only: bool) -> None:
        body, _how = mutated
        fuzzer.send("POST", CREATE, body=encode_json(body, ascii_only=ascii_only),
                    content_type="application/json")

    run_examples(fuzz, examples)


# --- POST /v1/responses/input_tokens ------------------------------------------------------------

COUNT = "/v1/responses/input_tokens"


def _count_fields(body: Any) -> Any:
    """A create body cut to what a count request takes, so most mutations are judged on their merits."""
    return {k: v for k, v in body.items() if k in input_tokens.PARAMS} if isinstance(body, dict) else body


def test_input_tokens_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    examples = scaled(200)

    @settings(FUZZ, max_examples=examples)
    @given(body=st.one_of(ARBITRARY_CREATE, mutated_create_bodies().map(lambda mutated: _count_fields(mutated[0]))),
           ascii_only=st.booleans(), content_type=content_types)
    def fuzz(body: Any, ascii_only: bool, content_type: str | None) -> None:
        fuzzer.send("POST", COUNT, body=encode_json(body, ascii_only=ascii_only), content_type=content_type)

    run_examples(fuzz, examples)


# --- GET/DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ----------------------------

SMALL_BODIES = st.one_of(st.just(b""), st.just(b""), st.binary(max_size=60),
                         json_values.map(lambda v: encode_json(v, ascii_only=True)))
# Mostly the seeded response (so the found paths are exercised too), often anything.
RESPONSE_IDS = st.one_of(st.just(EXISTING.encode()), path_ids)


# stream=true replays the response's events (only those after starting_after).
REPLAY = {"stream": st.sampled_from(["true", "false", "TRUE"]), "starting_after": st.integers(0, 15).map(str)}


def test_response_by_id(fuzzer: Fuzzer) -> None:
    examples = scaled(250)

    @settings(FUZZ, max_examples=examples)
    @given(method=st.sampled_from(["GET", "DELETE"]), response_id=RESPONSE_IDS,
           query=query_strings(["stream", "include[]", "starting_after"], REPLAY), body=SMALL_BODIES,
           content_type=content_types)
    def fuzz(method: str, response_id: bytes, query: str, body: bytes, content_type: str | None) -> None:
        fuzzer.send(method, b"/v1/responses/" + response_id, query=query,
                    body=body, content_type=content_type)

    run_examples(fuzz, examples)


def test_cancel(fuzzer: Fuzzer) -> None:
    """The seeded response is not a background one: its cancel is a 400, and nothing changes."""
    examples = scaled(100)

    @settings(FUZZ, max_examples=examples)
    @given(response_id=RESPONSE_IDS, query=query_strings(["stream"]), body=SMALL_BODIES, content_type=content_types)
    def fuzz(response_id: bytes, query: str, body: bytes, content_type: str | None) -> None:
        fuzzer.send("POST", b"/v1/responses/" + response_id + b"/cancel", query=query, body=body,
                    content_type=content_type)

    run_examples(fuzz, examples)


PAGING = {"limit": st.integers(min_value=1, max_value=100).map(str), "order": st.sampled_from(["asc", "desc"]),
          "after": st.just(EXISTING_ITEM)}


def test_input_items(fuzzer: Fuzzer) -> None:
    examples = scaled(350)

    @settings(FUZZ, max_examples=examples)
    @given(response_id=st.one_of(st.just(EXISTING.encode()), RESPONSE_IDS),
           query=query_strings(["limit", "order", "after"], PAGING), body=SMALL_BODIES,
           content_type=content_types)
    def fuzz(response_id: bytes, query: str, body: bytes, content_type: str | None) -> None:
        fuzzer.send("GET", b"/v1/responses/" + response_id + b"/input_items", query=query, body=body,
                    content_type=content_type)

    run_examples(fuzz, examples)


# --- the Conversations API ---------------------------------------------------------------------

# Items that are valid somewhere (every input item of the valid create bodies), to mix with junk.
VALID_ITEMS = [item for body in VALID_BODIES if isinstance(body["input"], list) for item in body["input"]]
VALID_METADATA = st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16)
CONVERSATION_BODIES = st.one_of(
    # Valid or nearly: items that are valid somewhere, a few junk ones among them, metadata in or out of bounds.
    st.fixed_dictionaries(
        {"items": st.lists(st.sampled_from(VALID_ITEMS), min_size=1, max_size=22)},
        optional={"metadata": st.one_of(VALID_METADATA, st.dictionaries(short_text, hostile_values, max_size=18))}),
    st.fixed_dictionaries({"metadata": st.one_of(VALID_METADATA, hostile_values)}),
    st.fixed_dictionaries(
        {"items": st.one_of(st.lists(st.one_of(st.sampled_from(VALID_ITEMS), hostile_values), max_size=22),
                            hostile_values)}),
    # Anything at all.
    json_values,
    st.dictionaries(st.one_of(st.sampled_from(["items", "metadata"]), short_text), hostile_values, max_size=4),
)
# Each route with the methods it serves (tests_unsupported_methods sends the others).
CONVERSATION_CALLS = [("/v1/conversations", "POST")] + [
    (route, method) for route, methods in (("/v1/conversations/{id}", ("GET", "HEAD", "POST", "DELETE")),
                                           ("/v1/conversations/{id}/items", ("GET", "HEAD", "POST")),
                                           ("/v1/conversations/{id}/items/{item_id}", ("GET", "HEAD", "DELETE")))
    for method in methods]
# Mostly the seeded conversation and its item (so the found paths are exercised), often anything.
CONVERSATION_IDS = st.one_of(st.just(EXISTING_CONVERSATION.encode()), st.just(EXISTING_CONVERSATION.encode()),
                             st.just(EXISTING.encode()), path_ids)
CONVERSATION_ITEM_IDS = st.one_of(st.just(EXISTING_CONVERSATION_ITEM.encode()),
                                  st.just(EXISTING_CONVERSATION_ITEM.encode()), st.just(EXISTING_ITEM.encode()),
                                  path_ids)
CONVERSATION_PAGING = {**PAGING, "after": st.just(EXISTING_CONVERSATION_ITEM)}


def test_conversations(fuzzer: Fuzzer) -> None:
    examples = scaled(400)

    @settings(FUZZ, max_examples=examples)
    @given(call=st.sampled_from(CONVERSATION_CALLS), conversation_id=CONVERSATION_IDS, item_id=CONVERSATION_ITEM_IDS,
           query=query_strings(["limit", "order", "after", "include[]"], CONVERSATION_PAGING),
           body=st.one_of(CONVERSATION_BODIES.map(lambda v: encode_json(v, ascii_only=True)), SMALL_BODIES),
           content_type=content_types)
    def fuzz(call: tuple[str, str], conversation_id: bytes, item_id: bytes, query: str, body: bytes,
             content_type: str | None) -> None:
        route, method = call
        path = route.encode().replace(b"{id}", conversation_id).replace(b"{item_id}", item_id)
        fuzzer.send(method, path, query=query, body=body, content_type=content_type)

    run_examples(fuzz, examples)


# --- GET /v1/models, /health, /ready, /metrics; other methods; other paths -------------------------

def test_models_health_ready_metrics(fuzzer: Fuzzer) -> None:
    examples = scaled(250)

    @settings(FUZZ, max_examples=examples)
    @given(route=st.sampled_from(["/v1/models", "/v1/models/gpt-test", "/v1/models/nope", "/health", "/ready",
                                  "/metrics"]),
           query=query_strings(["limit", "after", "format"]), body=SMALL_BODIES, content_type=content_types)
    def fuzz(route: str, query: str, body: bytes, content_type: str | None) -> None:
        fuzzer.send("GET", route, query=query, body=body, content_type=content_type)

    run_examples(fuzz, examples)


ROUTES = {
    "/v1/responses": ("POST",), "/v1/responses/input_tokens": ("POST",), "/v1/models/{id}": ("GET", "HEAD"),
    "/v1/responses/{id}": ("GET", "HEAD", "DELETE"),
    "/v1/responses/{id}/input_items": ("GET", "HEAD"), "/v1/responses/{id}/cancel": ("POST",),
    "/v1/models": ("GET", "HEAD"), "/health": ("GET", "HEAD"),
    "/ready": ("GET", "HEAD"), "/metrics": ("GET", "HEAD"),
    "/v1/conversations": ("POST",), "/v1/conversations/{id}": ("GET", "HEAD", "POST", "DELETE"),
    "/v1/conversations/{id}/items": ("GET", "HEAD", "POST"),
    "/v1/conversations/{id}/items/{id}": ("GET", "HEAD", "DELETE"),
    "/v1/messages": ("POST",), "/v1/messages/count_tokens": ("POST",), "/v1/chat/completions": ("POST",),
}


def test_unsupported_methods(fuzzer: Fuzzer) -> None:
    examples = scaled(300)

    @settings(FUZZ, max_examples=examples)
    @given(route=st.sampled_from(sorted(ROUTES)), method=methods, response_id=RESPONSE_IDS,
           query=query_strings(["limit"]), body=st.one_of(SMALL_BODIES, st.just(encode_json(VALID_BODIES[0],
                                                                                           ascii_only=True))),
           content_type=content_types)
    def fuzz(route: str, method: str, response_id: bytes, query: str, body: bytes, content_type: str | None) -> None:
        if method in ROUTES[route]:
            method = "PUT"  # the supported methods have their own tests
        path = route.encode().replace(b"{id}", response_id)
        fuzzer.send(method, path, query=query, body=body, content_type=content_type)

    run_examples(fuzz, examples)


KNOWN_PATHS = [b"/v1/responses", b"/v1/responses/" + EXISTING.encode(), b"/v1/responses/input_tokens",
               b"/v1/models", b"/v1/models/gpt-test", b"/health", b"/ready", b"/metrics", b"/v1", b"/v1/", b"",
               b"/v1/messages", b"/v1/chat/completions"]
OTHER_PATHS = st.one_of(
    st.builds(lambda base, tail: base + tail, st.sampled_from(KNOWN_PATHS),
              st.sampled_from([b"/", b"//", b"/x", b"/cancel", b"/input_items/", b"/input_items/x", b"%00", b"\x00",
                               b"/..", b"/./", b";x", b"\xff"])),
    st.builds(lambda tail: b"/v1/" + tail, path_ids),
    st.builds(lambda tail: b"/" + tail, path_ids).filter(lambda p: not p.startswith(b"/admin")),
    st.sampled_from([b"/V1/models", b"/v1//responses", b"/v2/responses", b"/v1/completions", b"/"]),
)


def test_other_paths(fuzzer: Fuzzer) -> None:
    examples = scaled(200)

    @settings(FUZZ, max_examples=examples)
    @given(path=OTHER_PATHS, method=methods, query=query_strings(["limit"]), body=SMALL_BODIES)
    def fuzz(path: bytes, method: str, query: str, body: bytes) -> None:
        fuzzer.send(method, path, query=query, body=body, content_type="application/json")

    run_examples(fuzz, examples)
