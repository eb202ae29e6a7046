"""`readable_now` on descriptors numbered past 1024 (FD_SETSIZE), which a worker holding a few
hundred streams reaches: with select() it raised ValueError there, and the request that asked got
a 500 (its client watch, its upstream connection's reuse check, the API-key listener's check).
Checked with threads and in a gevent-patched interpreter, as gunicorn's workers run."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys

import pytest

from gateway_project.concurrency import readable_now
from tests.e2e.gunicorn import ROOT

HIGH = 1100


def check_high_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HIGH + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HIGH + 100), hard))
    filler = []
    try:
        while True:
            ours, theirs = socket.socketpair()
            if ours.fileno() >= HIGH and theirs.fileno() >= HIGH:
                break
            filler += [ours, theirs]
        assert readable_now(ours) is False
        assert readable_now(ours.fileno()) is False
        theirs.sendall(b"x")
        assert readable_now(ours) is True
        assert ours.recv(1) == b"x"
        assert readable_now(ours) is False
        theirs.close()
        assert readable_now(ours) is True  # EOF: there is something to read, the end
        assert ours.recv(1) == b""
        ours.close()
        with pytest.raises(ValueError, match="closed"):
            readable_now(ours)
    finally:
        for sock in filler:
            sock.close()


def test_descriptors_past_fd_setsize_with_threads() -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HIGH + 100:
        pytest.skip("the hard limit on open files is below 1,200")
    check_high_descriptors()


def test_descriptors_past_fd_setsize_under_gevent() -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HIGH + 100:
        pytest.skip("the hard limit on open files is below 1,200")
    code = ("from gevent import monkey; monkey.patch_all()\n"
            "from tests.gateway_project.test_readable_now import check_high_descriptors\n"
            "check_high_descriptors(); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["ok"]
