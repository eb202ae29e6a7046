"""Gemini specifics: key header, systemInstruction, images, tool config, minted call ids, filters, thoughts."""

from __future__ import annotations

from tests.conftest import ApiClient, sse_events
from tests.fakes.gemini_upstream import Reply
from tests.providers.harness import Fakes, final_response, output_text

TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def test_it_sends_the_key_system_instruction_and_generation_config(api: ApiClient, fakes: Fakes) -> None:
    api.create(model="gemini", instructions="Be brief.", temperature=0.5, max_output_tokens=64, input=[
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                                     {"type": "input_image", "image_url": "https://example.com/a.png"}]},
    ], tools=[TOOL], tool_choice="required")
    sent = fakes.gemini.last
    assert sent.path == "/v1beta/models/gemini-upstream:generateContent"
    assert sent.headers["x-goog-api-key"] == "goog-key"
    body = sent.json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nUse metric units."}]}
    assert body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 64}
    assert body["contents"] == [{"role": "user", "parts": [
        {"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}}]}]
    assert body["tools"] == [{"functionDeclarations": [{"name": "lookup", "parametersJsonSchema": TOOL["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_streams_use_sse_with_one_response_per_event(api: ApiClient, fakes: Fakes) -> None:
    fakes.gemini.script(Reply(text="alpha beta gamma"))
    events = sse_events(api.create(model="gemini", input="hi", stream=True))
    assert fakes.gemini.last.path == "/v1beta/models/gemini-upstream:streamGenerateContent?alt=sse"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["alpha", " beta", " gamma"]
    assert events[-1]["type"] == "response.completed"


def test_each_function_call_gets_its_own_minted_call_id(api: ApiClient, fakes: Fakes) -> None:
    fakes.gemini.script(Reply(text="", function_calls=[{"name": "lookup", "args": {"q": "a"}},
                                                       {"name": "lookup", "args": {"q": "b"}}]))
    body = final_response(api.create(model="gemini", input="two lookups", tools=[TOOL]), False)
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert len(calls) == 2 and calls[0]["call_id"] != calls[1]["call_id"]
    assert all(c["call_id"].startswith("call_") for c in calls)


def test_a_safety_stop_is_incomplete_with_content_filter(api: ApiClient, fakes: Fakes) -> None:
    for stream in (False, True):
        fakes.gemini.script(Reply(text="I was saying", finish_reason="SAFETY"))
        body = final_response(api.create(model="gemini", input="x", stream=stream), stream)
        assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "content_filter"}
        assert output_text(body) == "I was saying"


def test_an_output_without_its_call_in_the_chain_is_a_400(api: ApiClient, fakes: Fakes) -> None:
    response = api.create(model="gemini", input=[{"type": "function_call_output", "call_id": "call_x", "output": "1"}])
    assert response.status_code == 400
    assert "call_x" in response.json()["error"]["message"]
    assert fakes.gemini.requests == []
