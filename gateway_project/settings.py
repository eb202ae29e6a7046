"""Django settings, read from the environment with django-environ.

Everything a deployment changes is an environment variable; everything about providers, models
and observability lives in the YAML file named by GATEWAY_CONFIG (see gateway_project/config.py).
Unset DATABASE_URL / REDIS_URL means SQLite and in-process defaults, so a first run needs no services.
"""

from __future__ import annotations

import sys
from pathlib import Path

import environ

from gateway_project.config import ConfigError, load_config
from gateway_project.observability.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])

GATEWAY_CONFIG_PATH = env.str("GATEWAY_CONFIG", default=str(BASE_DIR / "config.yaml"))
try:
    GATEWAY = load_config(GATEWAY_CONFIG_PATH)
except ConfigError as exc:
    # One line an operator can act on, not a traceback through Django's settings machinery.
    sys.stderr.write(f"config error: {exc}\n")
    raise SystemExit(2) from None

REDIS_URL = env.str("REDIS_URL", default="")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "conversations_app",
    "responses_app",
    # Installed for its exports and helpers; the gateway's own metric families are in
    # gateway_project.observability.metrics (the names the seed documents).
    "django_prometheus",
    "identity_app",
]

# The seed's order: request id/logging -> tracing -> metrics -> rate limit -> auth -> views.
MIDDLEWARE = [
    "gateway_project.middleware.logging.LoggingMiddleware",
    "gateway_project.middleware.tracing.TracingMiddleware",
    "gateway_project.middleware.metrics.MetricsMiddleware",
    "gateway_project.middleware.errors.ApiErrorMiddleware",
    "gateway_project.middleware.ratelimit.RateLimitMiddleware",
    "gateway_project.middleware.auth.AuthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
WSGI_APPLICATION = "gateway_project.wsgi.application"
# API routes have no trailing slash; a redirect would turn the SDK's POST into a GET.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A small pool per worker process. Streams release their connection while waiting on the
    # upstream (conversations_app.store.release_connection), so this bounds Postgres connections
    # at workers x DB_POOL_MAX_SIZE however many streams are open.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Django 5.2 turns this into psycopg_pool's `check=ConnectionPool.check_connection` (it cannot
    # go in the pool options: Django passes `check=` itself). Every checkout is then tested with an
    # empty query, so a connection killed by a Postgres restart is replaced instead of failing
    # the request that drew it; gateway_project/db_pool.py makes the first dead one sweep the rest.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # libpq's own limit (2 s is its minimum) for opening a connection, so a host that drops packets
    # fails as fast as one that refuses them. A connect_timeout in DATABASE_URL wins.
    options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=2))
    options["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=8),
        # How long a request waits for a connection before it gets a 503 (database_unavailable).
        # Below 2 s so a request fails inside a 2 s budget while Postgres is down.
        "timeout": env.float("DB_POOL_TIMEOUT", default=1.5),
        # While Postgres is down the pool retries in the background with doubling delays (1 s,
        # 2 s, 4 s, ...) for this long. At psycopg_pool's 5 minutes the next try can come minutes
        # after Postgres is back, and every request until then waits out DB_POOL_TIMEOUT for a 503.
        # 2 s keeps the gap between tries (1 s) under DB_POOL_TIMEOUT; after giving up the pool
        # tries again as soon as a request asks, so recovery needs no restart.
        "reconnect_timeout": env.float("DB_POOL_RECONNECT_TIMEOUT", default=2.0),
    }
if test_db_name := env.str("TEST_DB_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": test_db_name}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "var" / "static"))

# Django enforces the body limit when the view reads request.body; the error middleware turns it
# into a 413 with the OpenAI error shape.
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY.server.max_request_body_size

# JSON (or text) lines on stdout, each with request_id, trace_id and span_id: docs/observability.md.
LOGGING = logging_config(GATEWAY.logging.format, GATEWAY.logging.python_level)
