"""Parse a JSON request body into a dict, refusing what the rest of the stack cannot hold.

A body that parses can still break the request later, after the upstream has been called (and
billed): Postgres text and jsonb refuse NUL, UTF-8 encoders refuse lone surrogates, JSON-mode
serialisers refuse NaN and infinities and overflow on deep nesting, and a 2**63 token count
is forwarded as is. So all of that is a 400 here, naming the parameter, before anything is spent.

The checks cost almost nothing on a typical body. Numbers are range-checked by the parser's
own hooks as they are read (a request body holds a handful of numeric literals, however large
it is). Strings and depth are decided by C-level scans of the raw bytes; only when a scan flags
something is the parsed tree walked, iteratively, checking only what was flagged.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway_project.api_errors import ApiError, invalid_request

# How deep objects and arrays may nest (the body itself is level 1). The parsed body is
# serialised again further down the stack: pydantic's JSON-mode dump (the echoed `tools` and
# `text.format`) gives up past 255 levels, json.dumps (psycopg's jsonb adapter, the SSE
# encoder, provider payloads) recurses under a recursion limit of 1,000 frames shared with the
# Django and gevent frames already on the stack, and Postgres jsonb parsing is bounded by its
# own stack depth. 64 stays far below all of them while being well beyond real requests: a
# content part's text sits at level 4 and tool JSON Schemas rarely pass 10.
MAX_DEPTH = 64

# Token counts and the like are forwarded to upstreams and stored; nothing in the stack holds
# more than a signed 64-bit integer (Postgres bigint, most upstreams' int64 fields).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_NOT_JSON = "We could not parse the JSON body of your request. The body must be valid JSON."

# --- cheap scans of the raw bytes -------------------------------------------------------------
# Each one over-approximates: a hit only means "walk the tree and look", so a false positive
# costs a walk, but a miss means the parsed tree cannot hold the problem.

# Strict UTF-8 decoding leaves escapes as the only way to write NUL or a surrogate. A surrogate
# escape is usually half of a valid pair (ensure_ascii encoders write emoji as `\ud83d\ude42`),
# which the walk then clears by checking only non-ASCII strings; a regex that told pairs from
# lone halves was tried, and on escape-heavy bodies it cost more than the walk it saved.
_ESCAPE_HINT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")  # one pass for both, on every body
_NUL_ESCAPE = re.compile(rb"\\u0000")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# Below this size two count() passes are cheaper than up to `limit` find() calls.
_COUNT_BELOW = 8192


def _more_openers_than(body: bytes, limit: int) -> bool:
    """Whether `[` and `{` occur more than `limit` times in all: nesting cannot be deeper."""
    if len(body) <= _COUNT_BELOW:
        return body.count(b"[") + body.count(b"{") > limit
    # A long history of items passes the limit within its first few KB: stop there rather
    # than count a megabyte. Each step is a memchr.
    seen = 0
    for opener in b"[{":
        at = body.find(opener)
        while at != -1:
            seen += 1
            if seen > limit:
                return True
            at = body.find(opener, at + 1)
    return False


class _NonFiniteLiteral(Exception):
    pass


class _NumberOutOfRange(Exception):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFiniteLiteral(name)


def _int64(literal: str) -> int:
    # int() itself raises ValueError past sys.get_int_max_str_digits() (4,300 digits).
    value = int(literal)
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise _NumberOutOfRange


def _finite(literal: str) -> float:
    value = float(literal)  # 1e999 and 400-digit mantissas come out as +-inf
    if value - value == 0.0:
        return value
    raise _NumberOutOfRange


# Built once: json.loads() with hooks would build a decoder (and its C scanner) on every call.
_DECODER = json.JSONDecoder(parse_int=_int64, parse_float=_finite, parse_constant=_reject_constant)
# Used only to find where an out-of-range number is, once _DECODER has refused the body.
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a dict, or an `ApiError` (400) saying what is wrong and, where it can, where."""
    numbers_ok = True
    try:
        # Strict UTF-8 (RFC 8259 §8.1) rather than json's own detection, which also accepts
        # UTF-16/32 and lets UTF-8-encoded surrogates through ('surrogatepass'). A BOM is
        # skipped, as json.loads(bytes) did ("utf-8-sig" would, but through a slower codec).
        text = body.decode("utf-8")
        if text.startswith("\ufeff"):
            text = text[1:]
        try:
            data = _DECODER.decode(text)
        except _NumberOutOfRange:
            # Parse again without the check, for the walk to name the parameter. (It finds
            # nothing only when a duplicate key replaced the value; then there is no harm.)
            numbers_ok = False
            data = _PLAIN_DECODER.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_request(_NOT_JSON, code="invalid_json") from None
    except _NonFiniteLiteral as exc:
        raise invalid_request(f"We could not parse the JSON body of your request: {exc} is not a valid JSON "
                              "number.", code="invalid_json") from None
    except ValueError:
        # The only other ValueError from the parser: an integer longer than Python converts
        # (sys.get_int_max_str_digits(), 4,300 digits by default).
        raise invalid_request("We could not parse the JSON body of your request: it contains an integer with "
                              "too many digits.", code="invalid_json") from None
    except RecursionError:
        raise invalid_request("We could not parse the JSON body of your request: it is nested more than "
                              f"{MAX_DEPTH} levels deep.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    nul = surrogates = False
    if hint := _ESCAPE_HINT.search(body):
        nul = _NUL_ESCAPE.search(body, hint.start()) is not None
        surrogates = _SURROGATE_ESCAPE.search(body, hint.start()) is not None
    if nul or surrogates or not numbers_ok or _more_openers_than(body, MAX_DEPTH):
        _walk(data, nul=nul, surrogates=surrogates, numbers=not numbers_ok)
    return data


def too_deeply_nested(text: str) -> bool:
    """Whether JSON carried inside a string (a function call's `arguments`) nests deeper than
    MAX_DEPTH. Text that is not JSON is someone else's business: False."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    try:
        value = _PLAIN_DECODER.decode(text)
    except RecursionError:
        return True
    except (ValueError, _NonFiniteLiteral):
        return False
    if not isinstance(value, (dict, list)):
        return False
    try:
        _walk(value, nul=False, surrogates=False, numbers=False)
    except ApiError:
        return True
    return False


# --- the walk ---------------------------------------------------------------------------------

# Where a container sits: (parent's crumb, key or index), None for the body itself.
_Crumb = tuple[Any, str | int] | None


def _walk(data: dict[str, Any] | list[Any], *, nul: bool, surrogates: bool, numbers: bool) -> None:
    # Level by level, keeping each level's containers: nothing is allocated per container but
    # its slot in the next level's list (a depth-first stack of (node, depth, path) tuples cost
    # 4x more on a body of millions of tiny containers, much of it in the garbage collector),
    # and a path is recovered from the kept levels only when there is a problem to name.
    strings = nul or surrogates
    levels: list[list[Any]] = []
    level: list[Any] = [data]
    while level:
        levels.append(level)
        if len(levels) > MAX_DEPTH:
            raise _invalid(_crumb_of(levels, level[0]), f"JSON may be nested at most {MAX_DEPTH} levels deep")
        if not (strings or numbers):
            level = [value for node in level for value in (node.values() if type(node) is dict else node)
                     if isinstance(value, (dict, list))]
            continue
        children: list[Any] = []
        for node in level:
            pairs: Any
            if type(node) is dict:
                if strings:
                    for key in node:
                        if (nul and "\x00" in key) or (surrogates and not key.isascii() and _has_lone_surrogate(key)):
                            problem = f"object keys must not contain {_text_problem(key)}"
                            raise _invalid(_crumb_of(levels, node), problem)
                pairs = node.items()
            else:
                pairs = enumerate(node)
            # The tests are inlined, not a function call per value: on a body walked for its
            # emoji, the call overhead was half the walk. isascii() is O(1), and no surrogate is ASCII.
            for key, value in pairs:
                kind = type(value)
                if kind is dict or kind is list:
                    children.append(value)
                elif kind is str:
                    if strings and ((nul and "\x00" in value)
                                    or (surrogates and not value.isascii() and _has_lone_surrogate(value))):
                        problem = f"strings must not contain {_text_problem(value)}"
                        raise _invalid((_crumb_of(levels, node), key), problem)
                elif kind is int:
                    if numbers and not INT64_MIN <= value <= INT64_MAX:
                        problem = "integers must fit in a signed 64-bit integer"
                        raise _invalid((_crumb_of(levels, node), key), problem)
                elif kind is float and numbers and not math.isfinite(value):
                    raise _invalid((_crumb_of(levels, node), key), "numbers must be finite")
        level = children


def _crumb_of(levels: list[list[Any]], node: Any) -> _Crumb:
    """The path to `node`, a container of the last level, found by identity in the levels above."""
    keys: list[str | int] = []
    for parents in reversed(levels[:-1]):
        node, key = next((parent, key) for parent in parents
                         for key, value in (parent.items() if type(parent) is dict else enumerate(parent))
                         if value is node)
        keys.append(key)
    crumb: _Crumb = None
    for key in reversed(keys):
        crumb = (crumb, key)
    return crumb


def _has_lone_surrogate(text: str) -> bool:
    # The parser joins escaped pairs, so any surrogate left is lone, and UTF-8 cannot encode
    # one. Encoding is several times faster than searching with a regex character class.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text_problem(text: str) -> str:
    if "\x00" in text:
        return "the NUL character (\\u0000)"
    return "unpaired UTF-16 surrogates (\\ud800-\\udfff)"


def _param_of(crumb: _Crumb) -> str | None:
    """OpenAI's spelling of a location in the body: `input[0].content[0].text`, `metadata.foo`."""
    keys: list[str | int] = []
    while crumb is not None:
        crumb, key = crumb
        keys.append(key)
    out = ""
    for key in reversed(keys):
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else key
    return out or None


def _invalid(crumb: _Crumb, problem: str) -> ApiError:
    param = _param_of(crumb)
    where = f"'{param}'" if param else "the request body"
    return invalid_request(f"Invalid value for {where}: {problem}.", param=param, code="invalid_value")
