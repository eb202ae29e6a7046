"""The cancel token: set once, runs its callbacks once, reaches children, never throws into anyone."""

from __future__ import annotations

import threading
import time

from responses_app.cancellation import Cancelled, CancelToken, LiveTurns


def test_callbacks_run_once_with_the_first_reason_and_late_ones_run_at_once():
    token = CancelToken()
    seen: list[str] = []
    token.on_cancel(seen.append)
    assert token.cancel("client_gone") is True
    assert token.cancel("shutdown") is False
    token.on_cancel(seen.append)
    assert seen == ["client_gone", "client_gone"] and token.reason == "client_gone"


def test_a_forgotten_callback_does_not_run_and_a_broken_one_does_not_stop_the_others():
    token = CancelToken()
    seen: list[str] = []
    forget = token.on_cancel(lambda reason: seen.append("forgotten"))
    forget()
    token.on_cancel(lambda reason: 1 / 0)
    token.on_cancel(seen.append)
    token.cancel("shutdown")
    assert seen == ["shutdown"]


def test_a_child_follows_its_parent_but_not_the_other_way_and_release_detaches_it():
    parent = CancelToken()
    attempt = parent.child()
    attempt.cancel("idle")
    assert not parent.cancelled
    released = parent.child()
    released.release()
    following = parent.child()
    parent.cancel("client_gone")
    assert following.reason == "client_gone" and not released.cancelled


def test_sleep_returns_early_when_cancelled_from_another_thread():
    token = CancelToken()
    threading.Timer(0.05, token.cancel, args=("shutdown",)).start()
    started = time.monotonic()
    assert token.sleep(5) is True
    assert time.monotonic() - started < 1
    assert CancelToken().sleep(0.01) is False


def test_raise_if_cancelled_names_the_reason():
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel("shutdown")
    try:
        token.raise_if_cancelled()
    except Cancelled as stop:
        assert stop.reason == "shutdown"
    else:
        raise AssertionError("expected Cancelled")


def test_live_turns_cancels_every_registered_turn_once():
    turns = LiveTurns()
    first, second = CancelToken(), CancelToken()
    turns.add(first)
    turns.add(second)
    turns.discard(second)
    assert turns.cancel_all("shutdown") == 1 and turns.cancel_all("shutdown") == 0
    assert first.reason == "shutdown" and not second.cancelled
