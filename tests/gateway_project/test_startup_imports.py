"""What a worker loads at start: libraries only some deployments use are imported when used, since
each costs every worker its memory (issue 13's RSS bound): PyJWT (OIDC, only with an issuer
configured) and pygal (the admin's usage chart)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.gunicorn import ROOT

CHECK = """
from gevent import monkey; monkey.patch_all()
import sys
from gateway_project.wsgi import application
print(sorted(name for name in ("jwt", "pygal") if name in sys.modules))
"""


def test_a_worker_without_an_issuer_loads_neither_pyjwt_nor_pygal() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
           "GATEWAY_CONFIG": str(ROOT / "config.example.yaml"), "SECRET_KEY": "x" * 50}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "[]", done.stdout + done.stderr[-2000:]
