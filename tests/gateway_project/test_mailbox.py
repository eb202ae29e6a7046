"""The upstream guard's mailbox (gateway_project.concurrency.Mailbox) and the guard over it, with
threads (the test client, manage.py) and under gevent (gunicorn's workers): tests/gateway_project/
mailbox_checks.py, run here and in a gevent-patched interpreter."""

from __future__ import annotations

import pytest

from tests.gateway_project import mailbox_checks
from tests.gevent_checks import Check, assert_pass_under_gevent


@pytest.mark.parametrize("check", mailbox_checks.CHECKS, ids=lambda check: check.__name__)
def test_with_threads(check: Check) -> None:
    check()


def test_under_gevent() -> None:
    assert_pass_under_gevent("tests.gateway_project.mailbox_checks", mailbox_checks.CHECKS)
