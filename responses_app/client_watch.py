"""Noticing a client that hung up while its turn waits on the upstream.

A WSGI app only learns that the client left when a write fails, and while a turn waits on a slow
upstream it writes nothing: the upstream would keep generating (and billing) for nobody. Under
gunicorn's gevent workers the client socket is in `environ["gunicorn.socket"]`, so a watcher
greenlet can wait for it to become readable: an HTTP/1.1 client sends nothing more while it waits
for its answer, so readable-with-no-data is EOF, the client is gone. The watcher then *cancels the
turn's token* (responses_app.cancellation): the upstream read is shut down and the waiting request
wakes up and settles the turn `incomplete`. Nothing is thrown into the request, which may be in
the middle of a database call. Elsewhere (runserver, the Django test client) a hang-up is noticed
at the next write, and a stream's generator is closed, which settles the turn the same way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest

from gateway_project.concurrency import gevent_active
from responses_app.cancellation import CLIENT_GONE, CancelToken


class ClientWatch:
    def __init__(self, watcher: Any = None) -> None:
        self._watcher = watcher

    def stop(self) -> None:
        """Stop watching. Blocking: the watcher must have stopped reading the socket before gunicorn
        reads the next keep-alive request from it (gevent allows one reader per socket). Killing it
        is safe: it is our own greenlet, parked in a socket wait and doing nothing else."""
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher = None


def watch_client(request: HttpRequest, token: CancelToken) -> ClientWatch:
    client = request.META.get("gunicorn.socket")
    if client is None or not gevent_active():
        return ClientWatch()
    import gevent

    watch = ClientWatch(gevent.spawn(_watch, client, token))
    # Let the watcher look once now: a client that left while its request waited in the queue is
    # noticed before the turn writes anything or calls the upstream.
    gevent.sleep(0)
    return watch


def _watch(client: Any, token: CancelToken) -> None:
    try:
        data = client.recv(1, socket.MSG_PEEK)
    except OSError:
        data = b""
    if not data:
        token.cancel(CLIENT_GONE)
    # else: a pipelined request, not a hang-up: stop watching.


def until_done(frames: Iterator[str], watch: ClientWatch) -> Iterator[str]:
    """A stream's frames, with the watcher stopped when the stream ends however it ends."""
    try:
        yield from frames
    finally:
        watch.stop()
        frames.close()  # type: ignore[attr-defined]
