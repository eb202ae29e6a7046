"""Noticing a client that hung up while its turn waits on the upstream.

A WSGI app only learns that the client left when a write fails, and while a turn waits on a slow
upstream it writes nothing: the upstream would keep generating (and billing) for nobody. Under
gunicorn's gevent workers the client socket is in `environ["gunicorn.socket"]`, so a watcher on
the event loop can wait for it to become readable: an HTTP/1.1 client sends nothing more while it
waits for its answer, so readable-with-no-data is EOF, the client is gone. The watcher then
*cancels the turn's token* (responses_app.cancellation): the upstream read is shut down and the
waiting request wakes up and settles the turn `incomplete`. Nothing is thrown into the request, which may be in
the middle of a database call. Elsewhere (runserver, the Django test client) a hang-up is noticed
at the next write, and a stream's generator is closed, which settles the turn the same way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest

from gateway_project.concurrency import gevent_active, readable_now
from responses_app.cancellation import CLIENT_GONE, CancelToken


class ClientWatch:
    def __init__(self, watcher: Any = None) -> None:
        self._watcher = watcher

    def stop(self) -> None:
        """Stop watching (before gunicorn reads the next keep-alive request from the socket)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None


def watch_client(request: HttpRequest, token: CancelToken) -> ClientWatch:
    client = request.META.get("gunicorn.socket")
    if client is None or not gevent_active():
        return ClientWatch()
    if _hung_up(client):
        # Gone while the request waited in the queue: noticed before anything is written or spent.
        token.cancel(CLIENT_GONE)
        return ClientWatch()
    import gevent

    # A readiness watcher on the event loop, not a greenlet parked in recv(): nothing to switch to
    # or kill per request, and the socket is never read, only looked at.
    watcher = gevent.get_hub().loop.io(client.fileno(), 1)  # 1: readable

    def readable() -> None:
        watcher.stop()
        if _hung_up(client):
            # The callback runs on the event loop, where nothing may block: cancel in a greenlet.
            gevent.spawn(token.cancel, CLIENT_GONE)
        # else: a pipelined request, not a hang-up: stop watching.

    watcher.start(readable)
    return ClientWatch(watcher)


def _hung_up(client: Any) -> bool:
    """Readable with nothing to read is EOF: an HTTP/1.1 client sends nothing while it waits for
    its answer. Never blocks: the peek only happens when select says the socket is readable."""
    try:
        return readable_now(client) and client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def until_done(frames: Iterator[str], watch: ClientWatch) -> Iterator[str]:
    """A stream's frames, with the watcher stopped when the stream ends however it ends."""
    try:
        yield from frames
    finally:
        watch.stop()
        frames.close()  # type: ignore[attr-defined]
