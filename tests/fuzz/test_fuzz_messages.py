"""Fuzz Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) with
Hypothesis, as test_fuzz_api.py does the Responses API: hostile JSON, raw bytes, and valid bodies
with one field mutated. The properties are tests/fuzz/conftest.py's (`Fuzzer.send`): no 5xx, every
error in Anthropic's shape, an accepted call a Message (or its stream) that stored nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, Fuzzer, scaled
from tests.fuzz.strategies import (
    content_types,
    encode_json,
    hostile_values,
    json_values,
    mutate,
    paths_of,
    raw_bodies,
    short_text,
)
from tests.fuzz.test_fuzz_api import _run

MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
PNG = "iVBORw0KGgo="

VALID: list[dict[str, Any]] = [
    {"model": "gpt-test", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "demo", "max_tokens": 32, "system": [{"type": "text", "text": "Be brief."}],
     "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "temperature": 0.5},
    {"model": "gpt-test", "max_tokens": 100, "system": "Use tools.",
     "tools": [{"name": "weather", "description": "Weather.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
     "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
     "messages": [
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather",
                                            "input": {"city": "Paris"}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                       "content": [{"type": "text", "text": "sunny"}]}]}]},
    {"model": "gpt-test", "max_tokens": 50, "metadata": {"user_id": "u1"}, "stop_sequences": ["END"],
     "messages": [{"role": "user", "content": [
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
         {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
         {"type": "text", "text": "Describe."}]}]},
    {"model": "gpt-test", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
     "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
     "messages": [{"role": "user", "content": "JSON please"}]},
]
FIELDS = sorted({key for body in VALID for key in body} | {"stream", "top_k", "top_p", "service_tier"})


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(draw(st.sampled_from(VALID)))
    body["stream"] = draw(st.booleans())
    return body


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    body = draw(bodies())
    path = draw(st.sampled_from(paths_of(body)))
    how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "sibling"]))
    return mutate(body, path, how, draw(hostile_values) if how != "delete" else None)


ARBITRARY = st.one_of(
    json_values,
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), short_text), hostile_values, max_size=8),
    st.builds(lambda extra, required: {**extra, **required},
              st.dictionaries(st.sampled_from(FIELDS), hostile_values, max_size=3),
              st.fixed_dictionaries({"model": st.sampled_from(["gpt-test", "demo"]), "max_tokens": st.just(20),
                                     "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]),
                                                           hostile_values)})),
)


def test_messages_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    examples = scaled(400)

    @settings(FUZZ, max_examples=examples)
    @given(body=st.one_of(ARBITRARY, mutated()), ascii_only=st.booleans(), content_type=content_types)
    def fuzz(body: Any, ascii_only: bool, content_type: str | None) -> None:
        fuzzer.send("POST", MESSAGES, body=encode_json(body, ascii_only=ascii_only), content_type=content_type)

    _run(fuzz, examples)


def test_messages_with_raw_bytes(fuzzer: Fuzzer) -> None:
    examples = scaled(100)

    @settings(FUZZ, max_examples=examples)
    @given(raw=raw_bodies(), path=st.sampled_from([MESSAGES, COUNT]))
    def fuzz(raw: tuple[bytes, str], path: str) -> None:
        fuzzer.send("POST", path, body=raw[0], content_type="application/json")

    _run(fuzz, examples)


def test_count_tokens_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    examples = scaled(150)

    @settings(FUZZ, max_examples=examples)
    @given(body=st.one_of(ARBITRARY, mutated()), ascii_only=st.booleans())
    def fuzz(body: Any, ascii_only: bool) -> None:
        fuzzer.send("POST", COUNT, body=encode_json(body, ascii_only=ascii_only), content_type="application/json")

    _run(fuzz, examples)
