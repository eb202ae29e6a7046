"""A stream with no heartbeats (WebSocket mode, background turns) is read by its consumer, without a
helper: tests/providers/streamed_inline_checks.py, run with threads and under gevent."""

from __future__ import annotations

import pytest

from tests.gevent_checks import Check, assert_pass_under_gevent
from tests.providers import streamed_inline_checks


@pytest.mark.parametrize("check", streamed_inline_checks.CHECKS, ids=lambda check: check.__name__)
def test_with_threads(check: Check) -> None:
    check()


def test_under_gevent() -> None:
    assert_pass_under_gevent("tests.providers.streamed_inline_checks", streamed_inline_checks.CHECKS)
