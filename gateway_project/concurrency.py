"""Background work that behaves the same under gunicorn's gevent workers and plain threads.

Under gevent (monkey-patched) a helper is a greenlet: cheap, and cooperative with the request's
own greenlet. Elsewhere (the Django test client, `manage.py` commands) it is a daemon thread. The
standard library's `queue` and `threading` are patched by gevent, so code written against them
works in both worlds; this module only picks the cheaper way to start one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def gevent_active() -> bool:
    """True inside a gevent-patched process (gunicorn's gevent workers)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class Background:
    """A started helper. `join()` waits for it; it cannot be killed (work is stopped by telling it
    to stop, never by throwing into it)."""

    def __init__(self, target: Callable[..., Any], *args: Any, name: str) -> None:
        if gevent_active():
            import gevent

            self._greenlet: Any = gevent.spawn(target, *args)
            self._thread: threading.Thread | None = None
        else:
            self._greenlet = None
            self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds; True when the helper has finished."""
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            return bool(self._greenlet.dead)
        assert self._thread is not None  # noqa: S101 - start() set one of the two
        self._thread.join(timeout)
        return not self._thread.is_alive()


def start(target: Callable[..., Any], *args: Any, name: str = "gateway-helper") -> Background:
    return Background(target, *args, name=name)


def readable_now(fileobj: Any) -> bool:
    """Whether a socket has something to read (data, EOF or an error) right now, without blocking
    or yielding. gevent's select() yields to the event loop even with a zero timeout, which is a
    wasted switch here and forbidden inside an event-loop callback, so the original is used."""
    poll = _original_select()
    readable, _, _ = poll([fileobj], [], [], 0)
    return bool(readable)


def _original_select() -> Callable[..., Any]:
    if gevent_active():
        from gevent import monkey

        return monkey.get_original("select", "select")
    import select

    return select.select
