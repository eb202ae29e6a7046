"""Noticing a client that hung up while its stream waits on the upstream.

A WSGI app only learns that the client left when a write fails, and while the gateway is blocked
reading a slow upstream it writes nothing: the upstream would keep generating (and billing) for
nobody. Under gunicorn's gevent workers the client socket is in `environ["gunicorn.socket"]`, so a
watcher greenlet can wait for it to become readable: an HTTP/1.1 client sends nothing more while
it waits for the answer, so readable-with-no-data is EOF, the client is gone. The watcher then
throws `ClientGone` into the request's greenlet, which unwinds the stream exactly as a failed write
would (the provider closes its upstream connection, the service stores the turn `incomplete`).

The exception is only thrown while the request is waiting for the next frame, never while a frame
is being written; elsewhere (runserver, the Django test client) the frames pass through unwatched.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest

logger = logging.getLogger(__name__)


class ClientGone(BaseException):
    """Thrown into a stream whose client hung up. A BaseException, like GeneratorExit, so that no
    `except Exception` between here and the upstream socket mistakes it for an upstream failure."""


def until_client_leaves(request: HttpRequest, frames: Iterator[str]) -> Iterator[str]:
    client = request.META.get("gunicorn.socket")
    if client is None or not _gevent_active():
        return frames
    return _watched(client, frames)


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def _watched(client: Any, frames: Iterator[str]) -> Iterator[str]:
    import gevent

    request_greenlet = gevent.getcurrent()
    state = {"waiting": False, "gone": False}

    def watch() -> None:
        try:
            data = client.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if data:
            return  # a pipelined request, not a hang-up: stop watching
        state["gone"] = True
        # Delivered from the hub (as gevent.kill does), re-checking `waiting` at that moment: the
        # request may have received a frame meanwhile and be writing it, where nothing would catch it.
        gevent.get_hub().loop.run_callback(interrupt)

    def interrupt() -> None:
        if state["waiting"] and not request_greenlet.dead:
            logger.info("client disconnected mid-stream; closing the upstream")
            request_greenlet.throw(ClientGone)

    watcher = gevent.spawn(watch)
    try:
        while not state["gone"]:
            state["waiting"] = True
            try:
                frame = next(frames)
            except (StopIteration, ClientGone):
                return
            finally:
                state["waiting"] = False
            yield frame
    finally:
        # Blocking: the watcher must have stopped waiting on the socket before gunicorn reads the
        # next keep-alive request from it (gevent allows one reader per socket).
        watcher.kill()
        frames.close()  # type: ignore[attr-defined]
