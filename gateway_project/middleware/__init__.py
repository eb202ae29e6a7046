from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from django.http import StreamingHttpResponse


@dataclass
class StreamEnd:
    """What a middleware learns when a streamed body is over."""

    size: int = 0  # bytes handed to the server
    failure: Exception | None = None  # what broke the body; None when it ended or the client went away


_CALLBACKS = "_gateway_stream_end"


def when_stream_ends(response: StreamingHttpResponse, callback: Callable[[StreamEnd], None]) -> None:
    """Run `callback` once `response`'s body has been sent, cut short by the client, or broken.

    The first middleware to ask wraps the body in one generator; those further out add their
    callback to its list. Callbacks run in the order they were added, the innermost middleware's
    first, each even when one before it raised, as nested wrappers' `finally` blocks did. One
    generator for them all: each middleware's own wrapper was a generator and a Django
    `make_bytes` map more per chunk, and a layer more of C stack saved with every parked stream.
    """
    callbacks: list[Callable[[StreamEnd], None]] | None = getattr(response, _CALLBACKS, None)
    if callbacks is None:
        callbacks = [callback]
        setattr(response, _CALLBACKS, callbacks)
        # Sync: the gateway runs under WSGI and its views stream from plain iterators.
        content = cast("Iterator[bytes]", response.streaming_content)
        response.streaming_content = _until_the_end(content, callbacks)
    else:
        callbacks.append(callback)


def _until_the_end(content: Iterator[bytes], callbacks: list[Callable[[StreamEnd], None]]) -> Iterator[bytes]:
    end = StreamEnd()
    try:
        for chunk in content:
            end.size += len(chunk)
            yield chunk
    except Exception as exc:
        end.failure = exc
        raise
    # GeneratorExit (the client went away) is not a failure of the gateway's: only the end.
    finally:
        try:
            _run(callbacks, 0, end)
        finally:
            # The callbacks hold the response, which holds this list: a cycle only the cyclic
            # collector would free, after a long stream in its oldest generation.
            callbacks.clear()


def _run(callbacks: list[Callable[[StreamEnd], None]], index: int, end: StreamEnd) -> None:
    try:
        callbacks[index](end)
    finally:
        if index + 1 < len(callbacks):
            _run(callbacks, index + 1, end)
