"""Hypothesis strategies for the API fuzz: hostile strings, numbers and JSON values, raw bodies,
valid create bodies to mutate one field at a time, path ids and query strings.

Everything here is pure data: the tests decide what to send where. Values that depend on the
database (the id of a stored response, its items' ids) appear as placeholders, replaced at send time
(`fill_in`), so that what Hypothesis generates never depends on the run and CI sees the same cases.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# --- placeholders for what exists only at run time --------------------------------------------

# Unreserved characters only, so they survive percent-encoding into paths and query strings.
EXISTING = "__EXISTING_RESPONSE__"  # the id of a stored, completed response (ends in a function call)
EXISTING_ITEM = "__EXISTING_ITEM__"  # the id of one of its input items
EXISTING_CONVERSATION = "__EXISTING_CONVERSATION__"  # a conversation of the Conversations API
EXISTING_CONVERSATION_ITEM = "__EXISTING_CONVERSATION_ITEM__"  # one of its items
PLACEHOLDERS = (EXISTING, EXISTING_ITEM, EXISTING_CONVERSATION, EXISTING_CONVERSATION_ITEM)


def fill_in(text: str, known: dict[str, str]) -> str:
    """`text` with every placeholder replaced by what it stands for."""
    for name, real in known.items():
        text = text.replace(name, real)
    return text


# --- strings ----------------------------------------------------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
# Characters that have broken parsers, databases, logs or encoders somewhere.
NASTY_CHARS = st.sampled_from([
    "\x00", "\x01", "\x1f", "\x7f", "\x85", "\n", "\r", "\t", '"', "\\", "'", "%", "/", "?", "#", "&", "=", "+",
    "\u00e9", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\u2028", "\u2029", "\u202e", "\u200b", "\U0001F642",
    "\U0010FFFF", "\u00b2", "\u0661", "\uff11", "\u2167",
])
ANY_CHAR = st.one_of(st.characters(), SURROGATES, NASTY_CHARS)

# Whole strings worth trying anywhere a string goes.
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "a\udc00b", "\ud83d\ude42", "null", "true", "0", "-1", "1e999",
    "NaN", "[]", "{}", "%00", "%zz", "%", "%ED%A0%80", "..", "../..", "/", "resp_", "msg_", "resp_" + "0" * 48,
    "x" * 64, "x" * 65, "x" * 100, "x" * 101, "x" * 129, "x" * 513, "\u00b2", "\u0661\u0660", "\uff11", "1 ", " 1",
    "+1", "01", "1.0", "0x10", "\u2167", "9" * 40, "9" * 5000, "DROP TABLE x;--", "' OR 1=1 --", "<script>",
    "${jndi:x}", "{{7*7}}", "\r\nX-Injected: 1", "[" * 100 + "]" * 100, '{"a": ' * 70 + "1" + "}" * 70,
    '{"city": "Paris"}', EXISTING, EXISTING_ITEM,
]

short_text = st.text(alphabet=ANY_CHAR, max_size=24)


@st.composite
def long_text(draw: st.DrawFn) -> str:
    unit = draw(st.text(alphabet=ANY_CHAR, min_size=1, max_size=4))
    return unit * draw(st.integers(min_value=16, max_value=20_000 // len(unit)))


hostile_text = st.one_of(short_text, st.sampled_from(NASTY_STRINGS), long_text())

# --- numbers ----------------------------------------------------------------------------------

EDGE_INTS = [0, -1, 1, 15, 16, 20, 21, 100, 101, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64, 10**100, -(10**100), 10**4000]
hostile_int = st.one_of(st.integers(), st.sampled_from(EDGE_INTS))
hostile_float = st.one_of(
    st.floats(),  # NaN and the infinities included: json.dumps writes them as NaN/Infinity literals
    st.sampled_from([-0.0, 5e-324, 1e-300, 0.5, 1.0000001, 2.0000001, -2.0000001, 1e308, 1.7976931348623157e308]),
)

# --- JSON values ------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), hostile_int, hostile_float, hostile_text)


def nested(depth: int, leaf: Any = None, *, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


deep_values = st.builds(nested, st.integers(min_value=50, max_value=400), json_scalars, as_dict=st.booleans())

json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(short_text, st.sampled_from(NASTY_STRINGS)), children, max_size=5),
    ),
    max_leaves=12,
)

# Shapes that are almost right somewhere in a create body.
NEAR_MISSES = [
    [], {}, [{}], [[]], {"type": "input_text"}, {"type": "input_text", "text": "hi"}, {"type": "message"},
    {"role": "user", "content": "hi"}, [{"role": "user", "content": "hi"}], {"type": "function"},
    {"type": "function", "name": "f"}, {"type": "json_schema", "name": "n", "schema": {}}, {"type": "text"},
    {"id": EXISTING}, {"type": "item_reference", "id": EXISTING_ITEM}, {"format": {"type": "text"}}, "auto", "none",
    "required", "user", "assistant", "gpt-test", "demo",
]

hostile_values = st.one_of(json_values, deep_values, st.sampled_from(NEAR_MISSES))


def encode_json(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text for any value: NaN and infinities as their (invalid) literals; with ascii_only
    False a lone surrogate is written as its raw 3 bytes (not UTF-8), as a sloppy encoder would."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# --- valid create bodies ------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CITY_SCHEMA = {
    "type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["city", "temperature"], "additionalProperties": False,
}

VALID_BODIES: list[dict[str, Any]] = [
    {"model": "gpt-test", "input": "Hello there"},
    {"model": "demo", "input": "Hello demo", "instructions": "Be brief."},
    {"model": "gpt-test", "instructions": "You are terse.", "input": [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is in this picture?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {"type": "input_file", "file_data": "data:text/plain;base64,aGk=", "filename": "hi.txt"},
        ]},
        {"type": "message", "role": "assistant", "id": "msg_prior", "status": "completed",
         "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
        {"role": "user", "content": "And its colour?"},
    ]},
    {"model": "gpt-test", "tools": [WEATHER_TOOL], "tool_choice": "auto", "parallel_tool_calls": False, "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}",
         "id": "fc_1", "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\": 21}"},
    ]},
    {"model": "gpt-test", "previous_response_id": EXISTING, "tools": [WEATHER_TOOL],
     "tool_choice": {"type": "function", "name": "get_weather"},
     "input": [{"type": "function_call_output", "call_id": "call_seed",
                "output": [{"type": "input_text", "text": "sunny"}]}]},
    {"model": "gpt-test", "previous_response_id": "resp_" + "f" * 48, "input": "Does this chain exist?"},
    {"model": "gpt-test", "input": [
        {"role": "user", "content": "Think first."},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thought about it."}],
         "encrypted_content": "opaque"},
        {"role": "assistant", "content": "Done thinking.", "id": "msg_2"},
        {"role": "user", "content": [{"type": "input_text", "text": "Go on."}]},
    ]},
    {"model": "gpt-test", "input": "Weather as JSON", "text": {
        "format": {"type": "json_schema", "name": "weather", "schema": CITY_SCHEMA, "strict": True,
                   "description": "A city's weather"}, "verbosity": "low"}},
    {"model": "gpt-test", "input": "Tagged", "metadata": {"customer": "c-42", "trace": "abc"}, "user": "u-1",
     "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64, "truncation": "disabled", "include": [],
     "reasoning": {"effort": "low"}, "service_tier": "auto", "safety_identifier": "s-1", "prompt_cache_key": "k",
     "max_tool_calls": 3, "top_logprobs": 2, "presence_penalty": 0.5, "frequency_penalty": -0.5,
     "stream_options": {"include_obfuscation": False}, "text": {"format": {"type": "json_object"}}},
]


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a body (keys and list indexes), the body's own fields first."""
    out: list[tuple[Any, ...]] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        out.append((*prefix, key))
        out.extend(paths_of(child, (*prefix, key)))
    return out


def mutate(body: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of `body` with the node at `path` replaced by `value`, deleted, or given a sibling."""
    body = json.loads(json.dumps(body))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif isinstance(parent, dict):  # a sibling: an unknown parameter beside a known one
        parent[f"unknown_{last}"] = value
    else:
        parent.insert(last, value)
    return body


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid create body (stream and store either way)."""
    body = dict(draw(st.sampled_from(VALID_BODIES)))
    body["stream"] = draw(st.booleans())
    body["store"] = draw(st.booleans())
    return body


def mutations(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[tuple[Any, str]]:
    """A body from `valid` with one field replaced by a hostile value of any type (or deleted, or
    given an unknown sibling), and a label saying which."""
    @st.composite
    def one_mutated(draw: st.DrawFn) -> tuple[Any, str]:
        body = draw(valid)
        path = draw(st.sampled_from(paths_of(body)))
        how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "sibling"]))
        value = draw(hostile_values) if how != "delete" else None
        return mutate(body, path, how, value), f"{how} {'.'.join(map(str, path))}"

    return one_mutated()


def mutated_create_bodies() -> st.SearchStrategy[tuple[Any, str]]:
    """A valid create body of the Responses API with one field mutated (`mutations`)."""
    return mutations(create_bodies())


def arbitrary_bodies(fields: list[str], required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Bodies for an endpoint whose parameters are `fields`: any JSON value at all; parameter names
    (and others) with values of any type; the `required` parameters and a few others of any type."""
    return st.one_of(
        json_values,
        st.dictionaries(st.one_of(st.sampled_from(fields), short_text), hostile_values, max_size=8),
        st.builds(lambda extra, required: {**extra, **required},
                  st.dictionaries(st.sampled_from(fields), hostile_values, max_size=3),
                  st.fixed_dictionaries(required)),
    )


# --- raw bodies ---------------------------------------------------------------------------------

RAW_LITERALS = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"9" * 5000, b"1" * 4301, b"-" + b"9" * 30, b"01",
    b"-", b"+1", b"0x10", b"1.", b".5", b"1e", b"tru", b"nul", b"'single'", b'"\\ud800"', b'"\\udfff\\ud800"',
    b'"\\u0000"', b'"\\uZZZZ"', b'"\\x41"', b'"\xff\xfe"', b'"\xed\xa0\x80"', b'"\xc0\x80"', b'"\xf4\x90\x80\x80"',
    b'"unterminated', b"[" * 100 + b"]" * 100, b"[" * 70_000, b"{" * 30, b'{"a": 1, "a": 2}', b"[1,]", b"{,}",
    b'"\t raw tab"', b'"raw \n newline"', b"\x00", b"/* comment */ 1", b'"' + b"x" * 70_000 + b'"',
]


@st.composite
def raw_bodies(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]] | None = None) -> tuple[bytes, str]:
    """Bytes that are not quite JSON (or not JSON at all), with a label saying how they were made;
    truncated, spliced and re-encoded ones are made from `bodies` (the Responses API's by default)."""
    kind = draw(st.sampled_from(["binary", "truncated", "spliced", "literal", "encoding", "text"]))
    valid = encode_json(draw(create_bodies() if bodies is None else bodies), ascii_only=draw(st.booleans()))
    if kind == "binary":
        return draw(st.binary(max_size=300)), kind
    if kind == "truncated":
        return valid[: draw(st.integers(min_value=0, max_value=len(valid) - 1))], kind
    if kind == "spliced":
        at = draw(st.integers(min_value=0, max_value=len(valid)))
        return valid[:at] + draw(st.binary(min_size=1, max_size=8)) + valid[at:], kind
    if kind == "literal":
        # A field's value written verbatim: what json.dumps will not write.
        field = draw(st.sampled_from(["model", "input", "temperature", "max_output_tokens", "metadata", "tools",
                                      "previous_response_id", "stream", "unknown"]))
        literal = draw(st.sampled_from(RAW_LITERALS))
        return b'{"model": "gpt-test", "input": "hi", "' + field.encode() + b'": ' + literal + b"}", kind
    if kind == "encoding":
        text = valid.decode("utf-8", "surrogatepass")
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1", "cp1252"]))
        return text.encode(codec, "surrogatepass" if codec.startswith("utf") else "replace"), f"{kind} {codec}"
    return draw(st.text(alphabet=ANY_CHAR, max_size=200)).encode("utf-8", "surrogatepass"), kind


# Content types a client (or an attacker) might send. The gateway reads the body as JSON whatever
# the header says, as OpenAI does; the point is that none of them changes how errors look.
CONTENT_TYPES = [
    None, "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "application/json; charset=bogus", "application/json; charset=", "text/plain", "text/event-stream",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "multipart/form-data",
    "multipart/form-data; boundary=", "application/octet-stream", "", ";", "application/json;;;=;",
    "*/*", "application/JSON", "x" * 2000,
]
content_types = st.one_of(
    st.sampled_from(CONTENT_TYPES),
    # Any header value a server would pass on: printable Latin-1 (no CR/LF/NUL).
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60),
)

# --- methods, paths and query strings ----------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"]
methods = st.one_of(st.sampled_from(METHODS), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1,
                                                      max_size=12))


def percent_encode(text: str) -> str:
    """Every byte outside the unreserved set percent-encoded; lone surrogates as their raw 3 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# Path ids as the bytes a server hands Django after percent-decoding (PATH_INFO is bytes read as
# Latin-1). Invalid UTF-8 here is what `%ff` in a request line becomes.
path_ids = st.one_of(
    st.sampled_from([EXISTING, EXISTING, "resp_" + "0" * 48, "resp_nope", "", "x" * 65, "x" * 101, "x" * 5000,
                     EXISTING + "\x00", "\x00", "%00", "%25", "..", ".", "resp_1/", "\u00e9", "\ud800"])
    .map(lambda s: s.encode("utf-8", "surrogatepass")),
    hostile_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=80),
)


def path_info(raw: bytes) -> str:
    return raw.decode("latin-1")


# Values for query parameters: numbers in every script and form, huge ones, the seeded item's id.
QUERY_EDGE_VALUES = [
    "1", "20", "100", "101", "0", "-1", "asc", "desc", "ASC", "", EXISTING_ITEM, EXISTING_ITEM + "\x00",
    EXISTING_CONVERSATION_ITEM,
    "\u00b2", "\u0661", "\uff11", "1\u00b2", "\u2167", "9" * 5000, "9" * 30, "1e2", "1.0", " 1", "1 ", "+1", "0x10",
    "1_0", "\x00", "%00", "NaN",
]
# Things that look like numbers: digits of every script (int() reads them), superscripts, circled
# and Roman numerals (str.isdigit() or isnumeric() says yes, int() says no), signs, points, exponents.
numeric_text = st.text(alphabet=st.one_of(st.sampled_from("0123456789"), st.characters(categories=["Nd", "No", "Nl"]),
                                          st.sampled_from(" +-._eE")), min_size=1, max_size=8)
long_digits = st.integers(min_value=5, max_value=6000).map(lambda n: "9" * n)
query_values = st.one_of(st.sampled_from(QUERY_EDGE_VALUES), st.integers(min_value=-5, max_value=200).map(str),
                         numeric_text, long_digits, hostile_text)


@st.composite
def query_strings(draw: st.DrawFn, names: list[str], valid: dict[str, st.SearchStrategy[str]] | None = None) -> str:
    """A QUERY_STRING: each of `names` absent, valid (from `valid`) or hostile, maybe repeated, maybe
    with other parameters, in any order; or raw junk."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        # Raw: what arrives unencoded ('&', '=', '%' and Latin-1 bytes included).
        return draw(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=120))
    valid = valid or {}
    pairs = []
    for name in names:
        how = draw(st.sampled_from(["absent", "valid", "valid", "hostile"]))
        if how != "absent":
            pairs.append((name, draw(valid[name] if how == "valid" and name in valid else query_values)))
    pairs += draw(st.lists(st.tuples(st.sampled_from([*names, "include[]", "stream", "x", ""]), query_values),
                           max_size=1))
    pairs = draw(st.permutations(pairs))
    return "&".join(f"{percent_encode(name)}={percent_encode(value)}" for name, value in pairs)
