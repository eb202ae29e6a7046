"""POST /v1/chat/completions with "stream": true: chunks, usage, [DONE], keep-alives, failures."""

from __future__ import annotations

from conversations_app.models import StoredResponse
from tests.fakes.openai_upstream import Fail, Reply
from tests.surfaces.chat import chat, chunks, streamed_text
from tests.surfaces.test_chat_completions import WEATHER


def test_it_streams_chunks_and_ends_with_done(api, fake_openai):
    fake_openai.script(Reply(text="One two three"))
    response = chat(api, stream=True)
    assert response.status_code == 200
    assert response["content-type"] == "text/event-stream" and response["cache-control"] == "no-cache"
    found, done = chunks(response)
    assert done
    assert len({c["id"] for c in found}) == 1 and found[0]["id"].startswith("chatcmpl-")
    assert {(c["object"], c["model"], c["created"]) for c in found} == {
        ("chat.completion.chunk", "gpt-test", found[0]["created"])}
    assert found[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                    "logprobs": None, "finish_reason": None}]
    assert [c["choices"][0]["delta"] for c in found[1:-1]] == [{"content": "One"}, {"content": " two"},
                                                               {"content": " three"}]
    assert found[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert all("usage" not in c for c in found)  # not asked for


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices(api, fake_openai):
    fake_openai.script(Reply(text="Hi there", prompt_tokens=9, completion_tokens=2, cached_tokens=3))
    found, done = chunks(chat(api, stream=True, stream_options={"include_usage": True}))
    assert done
    assert all(c["usage"] is None for c in found[:-1])
    last = found[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 9 and last["usage"]["completion_tokens"] == 2
    assert last["usage"]["total_tokens"] == 11 and last["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert found[-2]["choices"][0]["finish_reason"] == "stop"
    assert streamed_text(found) == "Hi there"


def test_tool_calls_stream_as_indexed_deltas(api, fake_openai):
    fake_openai.script(Reply(text="Checking.", tool_calls=[
        {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'}]))
    found, done = chunks(chat(api, stream=True, tools=[WEATHER]))
    assert done and streamed_text(found) == "Checking."
    calls: dict[int, dict[str, str]] = {}
    for chunk in found:
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            if "id" in delta:
                assert delta["type"] == "function" and not call["id"]  # the id comes once, first
                call["id"] = delta["id"]
            call["name"] += delta["function"].get("name") or ""
            call["arguments"] += delta["function"].get("arguments") or ""
    assert calls == {0: {"id": "call_a", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
                     1: {"id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'}}
    assert found[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_refusal_streams_as_refusal_deltas(api, fake_openai):
    fake_openai.script(Reply(text="", refusal="No can do."))
    found, done = chunks(chat(api, stream=True))
    assert done
    assert "".join(c["choices"][0]["delta"].get("refusal") or "" for c in found) == "No can do."


def test_a_length_limit_finishes_with_length(api, fake_openai):
    fake_openai.script(Reply(text="Cut short", finish_reason="length"))
    found, done = chunks(chat(api, stream=True, max_tokens=2))
    assert done and found[-1]["choices"][0]["finish_reason"] == "length"


def test_a_failure_before_the_first_event_is_an_http_status(api, fake_openai):
    fake_openai.script(Fail(503, "overloaded"))
    response = chat(api, stream=True)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_error"


def test_a_failure_mid_stream_is_an_error_chunk_and_no_done(api, fake_openai):
    fake_openai.script(Reply(text="a b c d e f", drop_after=3))
    found, done = chunks(chat(api, stream=True, stream_options={"include_usage": True}, store=True))
    assert not done
    error = found[-1]
    assert set(error) == {"error"} and error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "server_error" and "broke off" in error["error"]["message"]
    assert streamed_text(found[:-1]) == "a b"
    stored = StoredResponse.objects.get()
    assert stored.status == "failed"


def test_silence_upstream_sends_keep_alive_comments(api, fake_openai, settings):
    settings.GATEWAY.server.sse_keepalive = 0.1
    fake_openai.script(Reply(text="late", first_byte_delay=0.35))
    raw = b"".join(chat(api, stream=True).streaming_content).decode()
    assert raw.index("\n\n: keep-alive\n\n") < raw.index("late")
    assert raw.endswith("data: [DONE]\n\n")
