"""Checks written once and run twice: in the test process (threads, as under the test client and
manage.py) and in a gevent-patched interpreter, as gunicorn's workers run the gateway. A checks
module lists its checks in CHECKS and ends with `if __name__ == "__main__": run_patched(CHECKS)`;
its test module runs each with threads and calls `assert_pass_under_gevent`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from tests.e2e.gunicorn import ROOT

Check = Callable[[], None]


def run_patched(checks: Sequence[Check]) -> None:
    """The checks module's main: the standard library patched first, then each check, saying so."""
    from gevent import monkey

    monkey.patch_all()
    import django

    from gateway_project import concurrency

    django.setup()
    assert concurrency.gevent_active()
    for check in checks:
        check()
        print("ok", check.__name__)


def assert_pass_under_gevent(module: str, checks: Sequence[Check]) -> None:
    done = subprocess.run([sys.executable, "-m", module], cwd=ROOT,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [word for check in checks for word in ("ok", check.__name__)]
