"""Cooperative cancellation: a token that is set, never an exception thrown into someone's code.

A turn owns one `CancelToken`. Whoever learns that the turn must stop (the client watcher when
the client hangs up, the worker when it shuts down) calls `cancel(reason)`; the token then runs the
callbacks that the parts doing the waiting registered: the upstream guard closes the upstream
socket and wakes the request. The request itself notices the token only where it waits or loops,
so it is never interrupted inside a database call, and its connection always goes back to the
pool clean. Each upstream attempt gets a child token, so an attempt can be abandoned (a timeout)
without cancelling the turn, while cancelling the turn cancels whatever attempt is running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Why a turn was stopped: the client hung up, the worker is shutting down, the client cancelled a
# background response, or time ran out.
CLIENT_GONE = "client_gone"
SHUTDOWN = "shutdown"
CANCELLED = "cancelled"  # POST /v1/responses/{id}/cancel, for a background response
DEADLINE = "deadline"


class Cancelled(Exception):
    """The turn was stopped from outside (client gone, shutdown): not an upstream failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cancelled: {reason}")
        self.reason = reason


Callback = Callable[[str], object]


class CancelToken:
    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callback] = {}
        self._next_key = 0
        self._event: threading.Event | None = None
        self._detach: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str) -> bool:
        """Set the token (once) and run every callback; False when it was already set."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            event = self._event
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # one broken callback must not keep the others from running
                logger.exception("cancellation callback failed")
        if event is not None:
            event.set()
        return True

    def on_cancel(self, callback: Callback) -> Callable[[], None]:
        """Run `callback(reason)` when the token is set (now, if it already is). Returns a function
        that unregisters it."""
        with self._lock:
            if self.reason is None:
                key = self._next_key
                self._next_key += 1
                self._callbacks[key] = callback
                return lambda: self._forget(key)
            reason = self.reason
        callback(reason)
        return _nothing

    def _forget(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)

    def child(self) -> CancelToken:
        """A token that is cancelled with this one but can also be cancelled alone. `release()` it
        when done so the parent does not keep it."""
        child = CancelToken()
        child._detach = self.on_cancel(child.cancel)
        return child

    def release(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`, returning early (True) when the token is set."""
        with self._lock:
            if self.reason is not None:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(seconds)

    def raise_if_cancelled(self) -> None:
        if self.reason is not None:
            raise Cancelled(self.reason)


def _nothing() -> None:
    return None


class LiveTurns:
    """The turns this worker process is running, so a shutdown can stop them cleanly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: set[CancelToken] = set()

    def add(self, token: CancelToken) -> None:
        with self._lock:
            self._tokens.add(token)

    def discard(self, token: CancelToken) -> None:
        with self._lock:
            self._tokens.discard(token)

    def __len__(self) -> int:
        return len(self._tokens)

    def cancel_all(self, reason: str) -> int:
        with self._lock:
            tokens = list(self._tokens)
        return sum(1 for token in tokens if token.cancel(reason))


live_turns = LiveTurns()
