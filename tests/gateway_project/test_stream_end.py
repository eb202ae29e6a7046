"""when_stream_ends: the middlewares' one wrapper around a streamed body. Callbacks run when the body
ends, is cut short by the client, or breaks; innermost first; each even when one before it raised;
and however many middlewares ask, the body passes through one generator."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.http import StreamingHttpResponse

from gateway_project.middleware import StreamEnd, when_stream_ends


def _body(*chunks: bytes, broken: bool = False) -> Iterator[bytes]:
    yield from chunks
    if broken:
        raise RuntimeError("upstream broke")


def _record(seen: list[tuple[str, int, Exception | None]], name: str):
    def callback(end: StreamEnd) -> None:
        seen.append((name, end.size, end.failure))
    return callback


def test_callbacks_run_in_the_order_added_once_the_body_is_sent():
    response = StreamingHttpResponse(_body(b"ab", b"cde"))
    seen: list[tuple[str, int, Exception | None]] = []
    for name in ("ratelimit", "metrics", "tracing", "logging"):
        when_stream_ends(response, _record(seen, name))
    assert b"".join(response) == b"abcde"
    assert seen == [(name, 5, None) for name in ("ratelimit", "metrics", "tracing", "logging")]


def test_one_generator_however_many_middlewares_ask():
    made = []

    class Counting(StreamingHttpResponse):
        def make_bytes(self, value):
            made.append(value)
            return super().make_bytes(value)

    response = Counting(_body(b"a", b"b"))
    for _ in range(4):
        when_stream_ends(response, lambda end: None)
    assert list(response) == [b"a", b"b"]
    # The view's iterator, then ours: each chunk through make_bytes twice (it was once per middleware more).
    assert made == [b"a", b"a", b"b", b"b"]


def test_a_client_gone_is_the_end_and_not_a_failure():
    response = StreamingHttpResponse(_body(b"a", b"b", b"c"))
    seen: list[tuple[str, int, Exception | None]] = []
    when_stream_ends(response, _record(seen, "only"))
    chunks = iter(response)
    assert next(chunks) == b"a"
    # What the server does when the client hangs up. Without Django's database bookkeeping on
    # request_finished (as its test client does): this test has no database, and a connection
    # another test of the same process left open would be touched.
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
    assert seen == [("only", 1, None)]


def test_a_broken_body_is_told_to_every_callback_even_when_one_before_raised():
    response = StreamingHttpResponse(_body(b"a", broken=True))
    seen: list[tuple[str, int, Exception | None]] = []

    def raises(end: StreamEnd) -> None:
        seen.append(("raises", end.size, end.failure))
        raise ValueError("a callback's own bug")

    when_stream_ends(response, raises)
    when_stream_ends(response, _record(seen, "after"))
    with pytest.raises(ValueError, match="a callback's own bug") as caught:
        list(response)
    assert isinstance(caught.value.__context__, RuntimeError)
    assert [(name, size, type(failure)) for name, size, failure in seen] == [
        ("raises", 1, RuntimeError), ("after", 1, RuntimeError)]


def test_once_the_body_is_over_the_callbacks_are_let_go_without_waiting_for_the_cyclic_collector():
    class Held:
        pass

    response = StreamingHttpResponse(_body(b"a"))
    held = Held()
    alive = weakref.ref(held)

    def callback(end: StreamEnd, response: StreamingHttpResponse = response, held: Held = held) -> None:
        pass  # holds the response (a cycle through it) and `held`, as the middlewares' callbacks do

    when_stream_ends(response, callback)
    del callback, held
    gc.disable()
    try:
        sent = list(response)
        del response
        freed = alive() is None  # by reference counting alone: no cycle through the callbacks is left
    finally:
        gc.enable()
    assert sent == [b"a"]
    assert freed
