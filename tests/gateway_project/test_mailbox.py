"""The upstream guard's mailbox (gateway_project.concurrency.Mailbox) and the guard over it, with
threads (the test client, manage.py) and under gevent (gunicorn's workers): tests/gateway_project/
mailbox_checks.py, run here and in a gevent-patched interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.gunicorn import ROOT
from tests.gateway_project import mailbox_checks


@pytest.mark.parametrize("check", mailbox_checks.CHECKS, ids=lambda check: check.__name__)
def test_with_threads(check: Callable[[], None]) -> None:
    check()


def test_under_gevent() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.gateway_project.mailbox_checks"], cwd=ROOT,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [word for check in mailbox_checks.CHECKS for word in ("ok", check.__name__)]
