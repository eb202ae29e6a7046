"""Input that Postgres or a JSON encoder cannot hold is a 400 naming the parameter, before any
upstream call (nothing billed) and before any write (nothing stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.models import Conversation, Item, StoredResponse
from tests.contract import validate_against_spec
from tests.fakes.openai_upstream import Reply

BAD_STRINGS = {"NUL": "a\x00b", "lone surrogate": "a\ud800b"}

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def _with_string(where: str, bad: str) -> tuple[dict[str, Any], str | None]:
    """A valid request with `bad` placed at `where`, and the param the error must name."""
    body: dict[str, Any] = {"model": "gpt-test", "input": "hi"}
    if where == "input":
        body["input"] = bad
        return body, "input"
    if where == "input text part":
        body["input"] = [{"role": "user", "content": [{"type": "input_text", "text": bad}]}]
        return body, "input[0].content[0].text"
    if where == "instructions":
        body["instructions"] = bad
        return body, "instructions"
    if where == "metadata value":
        body["metadata"] = {"foo": bad}
        return body, "metadata.foo"
    if where == "metadata key":
        body["metadata"] = {bad: "v"}
        return body, "metadata"
    if where == "item id":
        body["input"] = [{"type": "message", "role": "user", "content": "hi", "id": f"msg_{bad}"}]
        return body, "input[0].id"
    if where == "tool name":
        body["tools"] = [{**TOOL, "name": bad}]
        return body, "tools[0].name"
    if where == "tool parameters":
        params = {"type": "object", "properties": {"x": {"type": "string", "description": bad}}}
        body["tools"] = [TOOL, {**TOOL, "name": "second", "parameters": params}]
        return body, "tools[1].parameters.properties.x.description"
    raise AssertionError(where)


WHERE = ["input", "input text part", "instructions", "metadata value", "metadata key", "item id", "tool name",
         "tool parameters"]
STRING_CASES = [
    (f"{kind} in {where}", *_with_string(where, bad), "invalid_value")
    for where in WHERE for kind, bad in BAD_STRINGS.items()
]


def _raw(fields: dict[str, Any], **raw: str) -> str:
    """JSON text for `fields` plus members written verbatim (what json.dumps will not write)."""
    text = json.dumps(fields)
    members = "".join(f', "{name}": {value}' for name, value in raw.items())
    return text[:-1] + members + "}"


BASE: dict[str, Any] = {"model": "gpt-test", "input": "hi"}
DEEP = "[" * 100_000 + "]" * 100_000
NESTED_70 = "[" * 70 + "]" * 70

OTHER_CASES: list[tuple[str, Any, str | None, str]] = [
    ("lone low surrogate", {**BASE, "input": "\udc00 first"}, "input", "invalid_value"),
    ("surrogate as raw UTF-8 bytes", '{"model": "gpt-test", "input": "\xed\xa0\x80"}'.encode("latin-1"),
     None, "invalid_json"),
    ("100,000 nested arrays", _raw({"model": "gpt-test"}, input=DEEP), None, "invalid_json"),
    ("nesting past MAX_DEPTH", _raw({"model": "gpt-test"}, input=NESTED_70), "input" + "[0]" * 63,
     "invalid_value"),
    ("a 5,000-digit integer", _raw(BASE, max_output_tokens="9" * 5000), None, "invalid_json"),
    ("max_output_tokens 2**63", {**BASE, "max_output_tokens": 2**63}, "max_output_tokens", "invalid_value"),
    ("max_output_tokens 2**63-1", {**BASE, "max_output_tokens": 2**63 - 1}, "max_output_tokens", "invalid_value"),
    ("max_output_tokens 2**31", {**BASE, "max_output_tokens": 2**31}, "max_output_tokens", "invalid_value"),
    ("max_tool_calls 2**31", {**BASE, "max_tool_calls": 2**31}, "max_tool_calls", "invalid_value"),
    ("integer below int64 in tool parameters",
     {**BASE, "tools": [{**TOOL, "parameters": {"type": "integer", "minimum": -(2**63) - 1}}]},
     "tools[0].parameters.minimum", "invalid_value"),
    ("NaN", _raw(BASE, temperature="NaN"), None, "invalid_json"),
    ("Infinity", _raw(BASE, temperature="Infinity"), None, "invalid_json"),
    ("-Infinity", _raw(BASE, temperature="-Infinity"), None, "invalid_json"),
    ("1e999", _raw(BASE, temperature="1e999"), "temperature", "invalid_value"),
    ("-1e999 in tool parameters", _raw(BASE, tools='[{"type": "function", "name": "f", "parameters": '
                                                   '{"type": "number", "maximum": -1e999}}]'),
     "tools[0].parameters.maximum", "invalid_value"),
    ("empty previous_response_id", {**BASE, "previous_response_id": ""}, "previous_response_id", "invalid_value"),
    ("item id longer than storable", {**BASE, "input": [{"role": "user", "content": "hi", "id": "m" * 101}]},
     "input[0].id", "invalid_value"),
    ("function_call arguments nested too deep",
     {**BASE, "input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "[" * 100 + "]" * 100}]},
     "input[0].arguments", "invalid_value"),
]

CASES = STRING_CASES + OTHER_CASES


def _counts() -> tuple[int, int, int]:
    return (Conversation.objects.count(), StoredResponse.objects.count(), Item.objects.count())


def _streaming(body: Any) -> Any:
    if isinstance(body, dict):
        return {**body, "stream": True}
    return body[:-1] + (', "stream": true}' if isinstance(body, str) else b', "stream": true}')


@pytest.mark.parametrize("name, body, param, code", CASES, ids=[c[0] for c in CASES])
def test_it_refuses_what_cannot_be_stored_before_calling_upstream(api, fake_openai, settings, name, body, param,
                                                                   code):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1 << 20  # room for the 200 KB of nested arrays
    for payload in (body, _streaming(body)):
        response = api.post("/v1/responses", payload)
        assert response.status_code == 400, response.content[:500]
        assert response["content-type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert (error["param"], error["code"]) == (param, code), error["message"]
        assert response["x-should-retry"] == "false"
        validate_against_spec("ErrorResponse", response.json())
    assert _counts() == (0, 0, 0)
    assert fake_openai.requests == []


def test_legitimate_edge_values_still_go_through(api, fake_openai):
    fake_openai.script(Reply())
    emoji = "caf\u00e9 \U0001F642"
    body = {"model": "gpt-test", "input": [{"role": "user", "content": emoji, "id": "m" * 100}],
            "instructions": emoji, "metadata": {emoji: emoji}, "max_output_tokens": 2**31 - 1,
            "tools": [{**TOOL, "parameters": {"type": "integer", "minimum": -(2**63), "maximum": 1e308}}]}
    # json.dumps escapes the emoji as a surrogate pair, which must not be mistaken for a lone one.
    assert "\\ud83d\\ude42" in json.dumps(body)
    response = api.post("/v1/responses", body)
    assert response.status_code == 200, response.content
    assert response.json()["metadata"] == {emoji: emoji}
    stored = Item.objects.get(item_id="m" * 100)
    assert stored.data["content"][0]["text"] == emoji
    assert fake_openai.requests[0].json["max_completion_tokens"] == 2**31 - 1
