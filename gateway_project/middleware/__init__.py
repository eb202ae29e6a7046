from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from django.http import StreamingHttpResponse


def sync_streaming_content(response: StreamingHttpResponse) -> Iterator[bytes]:
    """`response.streaming_content`, for a middleware to wrap in a generator of its own.

    Typed as sync or async by Django; the gateway runs under WSGI and its views stream from plain
    iterators, so here it is always sync.
    """
    return cast("Iterator[bytes]", response.streaming_content)
