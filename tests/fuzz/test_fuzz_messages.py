"""Fuzz Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) with
Hypothesis, as test_fuzz_api.py does the Responses API: hostile JSON, raw bytes, and valid bodies
with one field mutated. The properties are tests/fuzz/conftest.py's (`Fuzzer.send`): no 5xx, every
error in Anthropic's shape, an accepted call a Message (or its stream) that stored nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzz.conftest import Fuzzer, post_json_bodies, post_raw_bodies, scaled
from tests.fuzz.strategies import (
    arbitrary_bodies,
    hostile_values,
    mutations,
)

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


def mutated() -> st.SearchStrategy[Any]:
    return mutations(bodies()).map(lambda mutated: mutated[0])


ARBITRARY = arbitrary_bodies(FIELDS, {
    "model": st.sampled_from(["gpt-test", "demo"]), "max_tokens": st.just(20),
    "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), hostile_values)})


def test_messages_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    post_json_bodies(fuzzer, MESSAGES, st.one_of(ARBITRARY, mutated()), scaled(400))


def test_messages_with_raw_bytes(fuzzer: Fuzzer) -> None:
    post_raw_bodies(fuzzer, [MESSAGES, COUNT], scaled(100))


def test_count_tokens_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    post_json_bodies(fuzzer, COUNT, st.one_of(ARBITRARY, mutated()), scaled(150), any_content_type=False)
