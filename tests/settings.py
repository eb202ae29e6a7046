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

# The suite renders admin pages without running collectstatic first: plain storage (the manifest
# storage needs collectstatic's manifest). tests/e2e/test_admin_browser.py runs the real one.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
# WhiteNoise looks files up per request (from the apps' static folders too) instead of reading an
# uncollected STATIC_ROOT at start.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
