"""Background work that behaves the same under gunicorn's gevent workers and plain threads.

Under gevent (monkey-patched) a helper is a greenlet: cheap, and cooperative with the request's
own greenlet. Elsewhere (the Django test client, `manage.py` commands) it is a daemon thread. The
standard library's `queue` and `threading` are patched by gevent, so code written against them
works in both worlds; this module only picks the cheaper way to start one.
"""

from __future__ import annotations

import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


_patched = False


def gevent_active() -> bool:
    """True inside a gevent-patched process (gunicorn's gevent workers). Asked on every helper's
    start and every write; once true it stays true (a process is never unpatched, and a forked
    one inherits its patching), so only that answer is remembered: a process may still be patched
    after it first asked (gunicorn patches a worker after the fork)."""
    global _patched
    if _patched:
        return True
    try:
        from gevent import monkey
    except ImportError:
        return False
    _patched = bool(monkey.is_module_patched("socket"))
    return _patched


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


def call_later(seconds: float, target: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """Run `target(*args)` in a helper after `seconds`, unless the returned function is called
    first. Under gevent a timer of the event loop, which starts a greenlet only if it fires (a
    timer's callback runs in the hub, where nothing may block); elsewhere a timer thread."""
    if gevent_active():
        import gevent

        timer = gevent.get_hub().loop.timer(max(0.0, seconds))
        timer.start(gevent.spawn, target, *args)

        def stop() -> None:
            timer.stop()
            timer.close()

        return stop
    thread = threading.Timer(max(0.0, seconds), target, args)
    thread.daemon = True
    thread.start()
    return thread.cancel


def readable_now(fileobj: Any) -> bool:
    """Whether a socket has something to read (data, EOF or an error) right now, without blocking
    or yielding. It is poll(), not select(): select() cannot take a descriptor numbered 1024 or
    above (FD_SETSIZE), which a worker holding a few hundred streams (a client socket and an
    upstream one each) reaches, and raised ValueError there, a 500 for the request. gevent's
    versions yield to the event loop even with a zero timeout, which is a wasted switch here and
    forbidden inside an event-loop callback, so the original is used. A descriptor that is not
    open (POLLNVAL) counts as readable: the caller's read finds out what is wrong."""
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    if fd < 0:
        raise ValueError("a closed socket has no descriptor to poll")
    poller = _original_poll()()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _original_poll() -> Callable[[], Any]:
    if gevent_active():
        from gevent import monkey

        return monkey.get_original("select", "poll")
    return select.poll


class Empty(Exception):
    """`Mailbox.get` waited its whole timeout and nothing came."""


class Mailbox(Generic[_T]):
    """Items from a helper to the one request that waits on them, the helper at most `capacity`
    items ahead of the request (it waits for room first: `wait_for_room`). `put` never blocks, so
    anyone may put (a cancellation putting its wake-up while the helper waits for room).

    The upstream guard hands every streamed event over one of these (responses_app/providers/
    guard.py). A queue.SimpleQueue with a semaphore for the room cost, under gevent, a Timeout
    object and a pure-Python Condition round per event, about a sixth of a slow stream's CPU
    (issue 13); under gevent this waits on the event loop's own Waiter and timer instead.
    `mailbox()` makes the one that fits the process."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[_T] = deque()
        self.unblocked = False

    def put(self, item: _T) -> None:
        raise NotImplementedError

    def get(self, timeout: float) -> _T:
        """The oldest item; waits up to `timeout` seconds for one, else raises `Empty`."""
        raise NotImplementedError

    def wait_for_room(self) -> None:
        """For the helper, before each `put`: wait while it is `capacity` items ahead."""
        raise NotImplementedError

    def unblock(self) -> None:
        """`wait_for_room` never waits again (the helper must see a cancellation at once)."""
        raise NotImplementedError


class _ThreadMailbox(Mailbox[_T]):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._changed = threading.Condition()

    def put(self, item: _T) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def get(self, timeout: float) -> _T:
        with self._changed:
            if not self._changed.wait_for(lambda: self.items, timeout):
                raise Empty
            item = self.items.popleft()
            self._changed.notify_all()
            return item

    def wait_for_room(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.unblocked or len(self.items) < self.capacity)

    def unblock(self) -> None:
        with self._changed:
            self.unblocked = True
            self._changed.notify_all()


class _GeventMailbox(Mailbox[_T]):
    # Every user is a greenlet of the worker's one thread, so plain attributes need no lock; a
    # waiter is woken from the event loop (run_callback), never by switching to it directly.

    def __init__(self, capacity: int) -> None:
        from gevent import get_hub
        from gevent.hub import Waiter

        super().__init__(capacity)
        self._hub = get_hub()
        self._waiter = Waiter
        self._getter: Any = None  # the request's Waiter while it waits for an item
        self._putter: Any = None  # the helper's Waiter while it waits for room

    def put(self, item: _T) -> None:
        self.items.append(item)
        if self._getter is not None:
            waiter, self._getter = self._getter, None
            self._hub.loop.run_callback(waiter.switch, None)

    def get(self, timeout: float) -> _T:
        if not self.items:
            waiter = self._getter = self._waiter(self._hub)
            timer = self._hub.loop.timer(max(0.0, timeout))
            timer.start(waiter.switch, None)  # woken empty-handed: Empty below
            try:
                waiter.get()
            finally:
                timer.close()
                self._getter = None
            if not self.items:
                raise Empty
        item = self.items.popleft()
        if self._putter is not None:
            self._wake_putter()
        return item

    def wait_for_room(self) -> None:
        while not self.unblocked and len(self.items) >= self.capacity:
            waiter = self._putter = self._waiter(self._hub)
            try:
                waiter.get()
            finally:
                self._putter = None

    def unblock(self) -> None:
        self.unblocked = True
        if self._putter is not None:
            self._wake_putter()

    def _wake_putter(self) -> None:
        waiter, self._putter = self._putter, None
        self._hub.loop.run_callback(waiter.switch, None)


def mailbox(capacity: int) -> Mailbox[Any]:
    return _GeventMailbox(capacity) if gevent_active() else _ThreadMailbox(capacity)
