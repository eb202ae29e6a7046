"""gateway_project.fast_json: orjson's speed, the standard library's meaning."""

from __future__ import annotations

import json

import pytest

from gateway_project import fast_json


def test_compact_json_that_any_parser_reads_back():
    value = {"type": "response.output_text.delta", "delta": "héllo \u2603 \n\"q\"", "n": [1, 2.5, None, True]}
    text = fast_json.dumps(value)
    assert "\n" not in text and ", " not in text
    assert json.loads(text) == value
    assert fast_json.loads(text) == value
    assert fast_json.loads(text.encode()) == value


@pytest.mark.parametrize("value", [
    {"big": 2**70},  # wider than 64 bits
    {"s": "half a pair: \ud800"},  # a lone surrogate
    {1: "int key"},
], ids=["big-int", "lone-surrogate", "int-key"])
def test_what_orjson_refuses_is_encoded_as_the_standard_library_did(value):
    text = fast_json.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    text.encode()  # escaped: nothing that cannot be written to a socket


@pytest.mark.parametrize("text", ['{"s": "\\ud800"}', '{"x": NaN}', '{"x": -Infinity}'],
                         ids=["lone-surrogate-escape", "nan", "infinity"])
def test_what_orjson_refuses_is_decoded_as_the_standard_library_did(text):
    assert repr(fast_json.loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", "{", "[1,]", '{"a": 1} x'])
def test_what_is_not_json_raises_the_standard_librarys_error(text):
    with pytest.raises(json.JSONDecodeError):
        fast_json.loads(text)


def test_an_integer_wider_than_64_bits_decodes_as_a_float():
    # The one difference from the standard library, documented in the module.
    assert fast_json.loads('{"n": 123456789012345678901234567890}') == {"n": 1.2345678901234568e29}
    assert fast_json.loads('{"n": 18446744073709551615}') == {"n": 2**64 - 1}
