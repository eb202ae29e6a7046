"""The WSGI apps `floor.py` runs under gunicorn's gevent workers, beside the gateway: each does a
part of what one small non-streamed turn needs and nothing else, so that its CPU per request is a
floor under the gateway's.

- `hello`: reads the body and answers a fixed Responses-shaped body. What gunicorn, gevent and
  loopback TCP cost per request, with no framework.
- `io`: the input/output of a stored turn with no framework around it: the body parsed (orjson),
  one Redis EVALSHA (a counter with an expiry, as a rate limit's), one pooled urllib3 POST to the
  upstream's Chat Completions, its answer parsed, one INSERT of the answer as jsonb on a pooled
  psycopg connection, and the answer rendered. What a gateway in Python on these libraries pays
  before any validation, routing, middleware, logging, metrics or tracing. `io_unstored` is the
  same without the INSERT.
- `django_hello` (in `floor_django.py`): Django with no middleware and one view answering the
  fixed body. What the framework adds to `hello`.

Configured from the environment: FLOOR_UPSTREAM (base URL ending in /v1), FLOOR_REDIS_URL,
FLOOR_DATABASE_URL (a database with the `floor_turns` table floor.py creates).
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import orjson

ANSWER = orjson.dumps({
    "id": "resp_0", "object": "response", "created_at": 0, "status": "completed", "model": "gpt-4o-mini",
    "output": [{"id": "msg_0", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello from the fake upstream.", "annotations": []}]}],
    "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
})
_HEADERS = [("Content-Type", "application/json")]

# As the gateway's workers collect (gunicorn.conf.py's post_worker_init), so the floors are not
# charged for collections the gateway does not run.
gc.set_threshold(10_000, 10, 10)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


_LIMIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class _IO:
    """Made on the first request, in the worker (after gevent patched the standard library)."""

    def __init__(self) -> None:
        import psycopg_pool
        import redis
        import urllib3

        self.upstream = os.environ["FLOOR_UPSTREAM"].rstrip("/") + "/chat/completions"
        self.http = urllib3.PoolManager(maxsize=64)
        self.redis = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
        self.limit = self.redis.register_script(_LIMIT_SCRIPT)
        self.pool = psycopg_pool.ConnectionPool(os.environ["FLOOR_DATABASE_URL"], min_size=2, max_size=8,
                                                kwargs={"autocommit": True}, open=True)
        self.prefix = f"floor:{secrets.token_hex(4)}:"


_io: _IO | None = None


def io(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    return _turn(environ, start_response, store=True)


def io_unstored(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """`io` without the INSERT: the floor under `store: false`."""
    return _turn(environ, start_response, store=False)


def _turn(environ: dict[str, Any], start_response: StartResponse, *, store: bool) -> Iterable[bytes]:
    global _io  # one per worker, made after the fork
    if _io is None:
        _io = _IO()
    from psycopg.types.json import Jsonb

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = orjson.loads(environ["wsgi.input"].read(length))
    _io.limit(keys=[_io.prefix + "acme"], args=[60_000])
    upstream = _io.http.request(
        "POST", _io.upstream,
        body=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": body["input"]}]}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    completion = orjson.loads(upstream.data)
    text = completion["choices"][0]["message"]["content"]
    response_id = "resp_" + secrets.token_hex(24)
    if store:
        with _io.pool.connection() as conn:
            conn.execute("INSERT INTO floor_turns (id, body) VALUES (%s, %s)",
                         (response_id, Jsonb({"input": body["input"], "output": text, "usage": completion["usage"]})))
    answer = orjson.dumps({"id": response_id, "object": "response", "status": "completed",
                           "output": [{"type": "message", "role": "assistant",
                                       "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                           "usage": completion["usage"]})
    start_response("200 OK", [*_HEADERS, ("Content-Length", str(len(answer)))])
    return [answer]
