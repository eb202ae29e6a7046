"""Fuzz OpenAI's Chat Completions API (`POST /v1/chat/completions`) with Hypothesis, as
test_fuzz_messages.py does the Messages API: hostile JSON, raw bytes, and valid bodies with one field
mutated. The properties are tests/fuzz/conftest.py's (`Fuzzer.send`): no 5xx, every error in OpenAI's
shape naming a parameter, an accepted call a ChatCompletion (or its chunks, ending with `[DONE]`)
that stored one response if the body said `store: true` and nothing otherwise. The valid bodies are
also sent unmutated while the fake upstream answers anything (`replies`): that found a NUL in an
answer making a stored call a 503 (tests/surfaces/test_chat_policy.py has its regression test)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.openai_upstream import Reply
from tests.fuzz.conftest import CHAT, FUZZ, Fuzzer, post_json_bodies, post_raw_bodies, run_examples, scaled
from tests.fuzz.strategies import (
    CITY_SCHEMA,
    WEATHER_TOOL,
    arbitrary_bodies,
    encode_json,
    hostile_values,
    mutations,
)

PNG = "data:image/png;base64,iVBORw0KGgo="
# The Responses API's function tool in Chat's wrapping.
WEATHER = {"type": "function", "function": {key: value for key, value in WEATHER_TOOL.items() if key != "type"}}
PARIS_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}

VALID: list[dict[str, Any]] = [
    {"model": "gpt-test", "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "demo", "max_tokens": 32, "temperature": 0.5, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
    {"model": "gpt-test", "max_completion_tokens": 64, "messages": [{"role": "user", "name": "ada", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "hi.txt"}}]}]},
    {"model": "gpt-test", "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [PARIS_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]}]},
    {"model": "gpt-test", "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
     "messages": [
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "Let me look.", "tool_calls": [PARIS_CALL]},
         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
         {"role": "assistant", "content": [{"type": "refusal", "refusal": "No more."}]},
         {"role": "user", "content": "And Rome?"}]},
    {"model": "gpt-test", "messages": [{"role": "user", "content": "Weather as JSON"}],
     "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": CITY_SCHEMA,
                                                                "strict": True, "description": "A city's weather"}},
     "verbosity": "low", "reasoning_effort": "low"},
    {"model": "gpt-test",
     "messages": [{"role": "developer", "content": "JSON only."}, {"role": "user", "content": "Hi"}],
     "response_format": {"type": "json_object"}, "n": 1, "top_p": 0.9, "presence_penalty": 0.5, "user": "u-1",
     "metadata": {"customer": "c-42"}, "seed": 7, "stop": ["END"], "logprobs": False, "service_tier": "auto"},
]
FIELDS = sorted({key for body in VALID for key in body} | {
    "stream", "stream_options", "store", "frequency_penalty", "logit_bias", "top_logprobs", "prediction",
    "modalities", "audio", "functions", "function_call", "web_search_options", "safety_identifier",
    "prompt_cache_key"})


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body, streamed or not (with or without usage), with `store` true, false or absent,
    maybe with a last question of any text and limits anywhere in their ranges."""
    body = dict(draw(st.sampled_from(VALID)))
    if draw(st.booleans()):
        # Any text but NUL, which the gateway refuses (Postgres cannot store it), and lone surrogates.
        text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40))
        body["messages"] = [*body["messages"], {"role": "user", "content": text}]
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(min_value=0, max_value=2))
        body["max_completion_tokens"] = draw(st.integers(min_value=1, max_value=2**31 - 1))
    body["stream"] = draw(st.booleans())
    if body["stream"] and draw(st.booleans()):  # stream_options without stream is a 400
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    store = draw(st.sampled_from([True, False, None]))
    if store is not None:
        body["store"] = store
    return body


def mutated() -> st.SearchStrategy[Any]:
    return mutations(bodies()).map(lambda mutated: mutated[0])


ARBITRARY = arbitrary_bodies(FIELDS, {
    "model": st.sampled_from(["gpt-test", "demo"]),
    "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), hostile_values)})


def test_chat_with_arbitrary_and_mutated_bodies(fuzzer: Fuzzer) -> None:
    post_json_bodies(fuzzer, CHAT, st.one_of(ARBITRARY, mutated()), scaled(400))


def test_chat_with_raw_bytes(fuzzer: Fuzzer) -> None:
    post_raw_bodies(fuzzer, [CHAT], scaled(100), bodies())


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    """What the fake upstream answers: any text (NUL included, as a model may write it), function
    calls, a refusal, any finish reason, usage or none."""
    calls = [{"id": f"call_{index}", "name": "get_weather", "arguments": arguments}
             for index, arguments in enumerate(draw(st.lists(st.sampled_from(ARGUMENTS), max_size=2)))]
    return Reply(text=draw(st.text(max_size=30)), tool_calls=calls,
                 refusal=draw(st.sampled_from([None, "I cannot help with that."])),
                 finish_reason=draw(st.sampled_from([None, "stop", "length", "content_filter", "tool_calls"])),
                 send_usage=draw(st.booleans()))


ARGUMENTS = ['{"city": "Paris"}', "{}", "", "not json", '{"city": "\\u0000"}']


def test_chat_with_valid_bodies(fuzzer: Fuzzer) -> None:
    """Every valid body, streamed or not, stored or not, whatever the upstream answers: each
    accepted, and checked as a client and the admin would see it (conftest.py: the completion or
    its chunks, the stored response)."""
    examples = scaled(150)

    @settings(FUZZ, max_examples=examples)
    @given(body=bodies(), ascii_only=st.booleans(), reply=replies())
    def fuzz(body: dict[str, Any], ascii_only: bool, reply: Reply) -> None:
        fuzzer.fake.default_step = reply
        response = fuzzer.send("POST", CHAT, body=encode_json(body, ascii_only=ascii_only),
                               content_type="application/json")
        assert response.status_code == 200, response.content

    try:
        run_examples(fuzz, examples)
    finally:
        fuzzer.fake.default_step = Reply()
