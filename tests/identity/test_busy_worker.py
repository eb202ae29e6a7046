"""A busy worker does not make the limiter fail open: tests/identity/busy_worker_checks.py, run with
threads and under gevent."""

from __future__ import annotations

import pytest

from tests.gevent_checks import Check, assert_pass_under_gevent
from tests.identity import busy_worker_checks


@pytest.mark.parametrize("check", busy_worker_checks.CHECKS, ids=lambda check: check.__name__)
def test_with_threads(check: Check) -> None:
    check()


def test_under_gevent() -> None:
    assert_pass_under_gevent("tests.identity.busy_worker_checks", busy_worker_checks.CHECKS)
