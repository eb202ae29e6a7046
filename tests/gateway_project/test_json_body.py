"""gateway_project.json_body: what it refuses, where it says the problem is, and that a clean
body takes the fast path (no walk of the parsed tree)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from gateway_project import json_body
from gateway_project.api_errors import ApiError
from gateway_project.json_body import MAX_DEPTH, parse_json_object, too_deeply_nested


def _refusal(body: bytes) -> tuple[str | None, str | None]:
    with pytest.raises(ApiError) as caught:
        parse_json_object(body)
    assert caught.value.status == 400
    return caught.value.param, caught.value.code


def _nested(levels: int) -> bytes:
    """A body whose deepest container sits at `levels` (the body itself is level 1)."""
    inner = levels - 1
    return b'{"a": ' + b"[" * inner + b"]" * inner + b"}"


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, bool]]:
    """Records each walk's flags (and still walks)."""
    calls: list[dict[str, bool]] = []
    real = json_body._walk

    def spy(data: Any, **flags: bool) -> None:
        calls.append(flags)
        real(data, **flags)

    monkeypatch.setattr(json_body, "_walk", spy)
    return calls


CLEAN = json.dumps({
    "model": "gpt-test", "instructions": 'Say "hi".\nThen stop.\t\\ done',
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "café 東京 🙂"}]}],
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        "x": {"type": "number", "maximum": 1e308}}}}],
    "metadata": {"k": "v"}, "temperature": 0.5, "max_output_tokens": 1024,
}, ensure_ascii=False).encode()


def test_a_clean_body_is_returned_without_walking(monkeypatch):
    def no_walk(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a clean body must not be walked")

    monkeypatch.setattr(json_body, "_walk", no_walk)
    assert parse_json_object(CLEAN) == json.loads(CLEAN)
    # Size alone does not cost a walk: a megabyte of text in a few containers.
    big = json.dumps({"model": "m", "input": [{"role": "user", "content": "x\n" * 500_000}]}).encode()
    assert parse_json_object(big)["input"][0]["content"] == "x\n" * 500_000


def test_the_walk_checks_only_what_the_scans_flagged(walks):
    parse_json_object(json.dumps({"input": "emoji \U0001F642 as an escaped pair"}).encode())
    assert walks[-1] == {"nul": False, "surrogates": True, "numbers": False}
    parse_json_object(json.dumps({"input": [{"content": [{}]} for _ in range(30)]}).encode())
    assert walks[-1] == {"nul": False, "surrogates": False, "numbers": False}
    with pytest.raises(ApiError):
        parse_json_object(b'{"a": "\\u0000"}')
    assert walks[-1] == {"nul": True, "surrogates": False, "numbers": False}
    with pytest.raises(ApiError):
        parse_json_object(b'{"a": [1, 2, 9223372036854775808]}')
    assert walks[-1] == {"nul": False, "surrogates": False, "numbers": True}


@pytest.mark.parametrize("body, param", [
    (b'{"input": [{"content": [{"text": "a\\u0000"}]}]}', "input[0].content[0].text"),
    (b'{"metadata": {"foo": "\\ud800"}}', "metadata.foo"),
    (b'{"metadata": {"f\\u0000o": "v"}}', "metadata"),
    (b'{"\\udfff": 1}', None),
    (b'{"tools": [{}, {"parameters": {"properties": {"x": "\\udc00\\ud800"}}}]}', "tools[1].parameters.properties.x"),
    (b'{"a": "\\\\\\ud800"}', "a"),  # an escaped backslash, then a lone surrogate
])
def test_nul_and_lone_surrogates_are_refused_where_they_are(body, param):
    assert _refusal(body) == (param, "invalid_value")


@pytest.mark.parametrize("body", [
    b'{"a": "\\ud83d\\ude42"}',  # a valid pair
    b'{"a": "\\\\ud800"}',  # an escaped backslash followed by the text "ud800"
    b'{"a": "\\\\u0000"}',
    "{\"a\": \"\U0001F642\"}".encode(),
])
def test_escapes_that_only_look_bad_are_accepted(body):
    assert parse_json_object(body) == json.loads(body)


def test_nesting_is_limited_to_max_depth():
    assert parse_json_object(_nested(MAX_DEPTH))
    # The first container past the limit is named: `a` is level 2, so 63 more indices reach 65.
    assert _refusal(_nested(MAX_DEPTH + 1)) == ("a" + "[0]" * (MAX_DEPTH - 1), "invalid_value")
    assert _refusal(_nested(100_000)) == (None, "invalid_json")


@pytest.mark.parametrize("literal, ok", [
    ("9223372036854775807", True), ("-9223372036854775808", True), ("9223372036854775808", False),
    ("-9223372036854775809", False), ("1e308", True), ("1e309", False), ("-1e999", False), ("1e-999", True),
    ("1" + "0" * 400 + ".0", False),
])
def test_numbers_must_fit_int64_and_be_finite(literal, ok):
    body = ('{"x": {"y": [' + literal + "]}}").encode()
    if ok:
        assert parse_json_object(body) == json.loads(body)
    else:
        assert _refusal(body) == ("x.y[0]", "invalid_value")


@pytest.mark.parametrize("body", [
    b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}', b'{"t": ' + b"1" * 5000 + b"}",
    b"{", b"[1]", b'"text"', "{}".encode("utf-16"), b'{"a": "\xed\xa0\x80"}',
])
def test_what_is_not_a_json_object_is_invalid_json(body):
    assert _refusal(body) == (None, "invalid_json")


def test_a_utf8_bom_is_skipped():
    assert parse_json_object(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_a_value_replaced_by_a_duplicate_key_does_no_harm():
    assert parse_json_object(b'{"a": 99999999999999999999, "a": 1}') == {"a": 1}


def test_too_deeply_nested_looks_at_json_inside_a_string():
    assert too_deeply_nested("[" * 100 + "]" * 100)
    assert too_deeply_nested("[" * 100_000 + "]" * 100_000)
    assert not too_deeply_nested("[" * 10 + "]" * 10)
    assert not too_deeply_nested('{"a": "' + "[" * 100 + '"}')  # brackets inside a string
    assert not too_deeply_nested("[" * 100)  # not JSON: not this function's business


def _naive_refuses(value: Any, depth: int = 1) -> bool:
    if isinstance(value, dict):
        return depth > MAX_DEPTH or any(_naive_refuses(k, depth) or _naive_refuses(v, depth + 1)
                                        for k, v in value.items())
    if isinstance(value, list):
        return depth > MAX_DEPTH or any(_naive_refuses(v, depth + 1) for v in value)
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return not -(2**63) <= value <= 2**63 - 1
    return not math.isfinite(value)


_PIECES = ["\\\\", "\\ud800", "\\udbff", "\\udc00", "\\uDFFF", "\\uD83D", "\\uDE42", "\\u0000", "\\u00e9", "u", "d800",
           "\\n", "é", "🙂"]
_NUMBERS = ["1", "-0.5", "1e308", "1e309", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
            "12345678901234567890", "1e-999"]


def _random_json(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if roll < 0.25 and depth < MAX_DEPTH + 3:
        return "[" + ",".join(_random_json(rng, depth + 1) for _ in range(rng.randint(0, 2))) + "]"
    if roll < 0.4 and depth < MAX_DEPTH + 3:
        return "{" + ",".join(f'"{_random_text(rng)}":{_random_json(rng, depth + 1)}'
                              for _ in range(rng.randint(0, 2))) + "}"
    if roll < 0.75:
        return f'"{_random_text(rng)}"'
    return rng.choice(_NUMBERS)


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 3)))


def test_it_agrees_with_a_naive_recursive_check_on_random_bodies():
    rng = random.Random(20260921)
    for _ in range(3000):
        inner = _random_json(rng, 2) if rng.random() < 0.9 else "[" * rng.randint(60, 66) + "]" * 66
        body = ('{"k":' + inner + "}").encode()
        try:
            expected = _naive_refuses(json.loads(body))
        except (ValueError, RecursionError):
            continue  # not JSON at all (unbalanced brackets): covered above
        try:
            parse_json_object(body)
            refused = False
        except ApiError:
            refused = True
        assert refused == expected, body[:200]
