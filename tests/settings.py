"""Settings for the test suite: the production settings module, with suite defaults in the
environment first. The suite runs against the local Postgres (as CI does); DATABASE_URL,
GATEWAY_CONFIG, REDIS_URL and TEST_DB_NAME may be overridden from the environment."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway")
os.environ.setdefault("GATEWAY_CONFIG", str(ROOT / "tests" / "config.test.yaml"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
# DEBUG is off, as in production, so the public development key would be refused; gunicorn and
# manage.py subprocesses inherit this one.
os.environ.setdefault("SECRET_KEY", "test-suite-secret-key-" + "not-for-production-" * 3)

from gateway_project.settings import *  # noqa: E402,F403
