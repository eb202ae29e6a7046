"""Django settings, read from the environment with django-environ.

Everything a deployment changes is an environment variable; everything about providers, models
and observability lives in the YAML file named by GATEWAY_CONFIG (see gateway_project/config.py).
Unset DATABASE_URL / REDIS_URL means SQLite and in-process defaults, so a first run needs no services.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import environ

from gateway_project import startup
from gateway_project.config import ConfigError, load_config
from gateway_project.observability.logging import logging_config
from gateway_project.sealing import check_keys

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

GATEWAY_CONFIG_PATH = env.str("GATEWAY_CONFIG", default=str(BASE_DIR / "config.yaml"))
try:
    GATEWAY = load_config(GATEWAY_CONFIG_PATH)
    DEBUG = startup.debug_enabled(os.environ)
    # The built-in key is public: refused unless DEBUG is on (gateway_project/startup.py).
    SECRET_KEY = startup.check_secret_key(os.environ)
except (ConfigError, startup.StartupError) as exc:
    # One line an operator can act on, not a traceback through Django's settings machinery.
    sys.stderr.write(f"config error: {exc}\n")
    raise SystemExit(2) from None

# Never `*` by default: a Host header is only believed for names the operator lists. Loopback
# names by default, for the default bind (127.0.0.1:8080) and for probes and health checks run
# on the host itself; a deployment lists its own name (and, on Kubernetes, the pod IP the
# kubelet's probes and Prometheus use: deploy/kubernetes/deployment.yaml).
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

# HTTPS. TLS ends in front of the gateway (a load balancer, an ingress, nginx); these say how much
# of that the gateway may rely on. `manage.py check --deploy` is clean with them at their defaults.
# The admin's cookies are Secure: a browser sends them over HTTPS only (and to localhost;
# scripts/run turns this off for its plain-HTTP first run).
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
# `X-Forwarded-Proto` (meaning the value https) or `Header=value`: the header the proxy in front
# sets on requests that came over HTTPS. Only set it when that proxy always sets or strips it,
# or a client could claim HTTPS.
if _proxy_header := env.str("SECURE_PROXY_SSL_HEADER", default=""):
    _name, _, _value = _proxy_header.partition("=")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip() or "https")
# Origins (https://admin.example.com) allowed to POST to the admin when they differ from the Host.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Opt-in: HSTS binds browsers to HTTPS for the whole max-age and cannot be taken back, so only an
# operator who knows every name below it serves HTTPS switches it on (and the load balancer that
# ends TLS is often the better place for it).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Off by default: the proxy that ends TLS redirects plain HTTP, and a redirect here would turn an
# SDK's POST into a GET and send the kubelet's plain-HTTP probes elsewhere (they are exempt if it is on).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$"]
# Deliberately silenced in `check --deploy`, for the reasons above: W004 (HSTS is opt-in; once it is
# on, W005 and W021 still ask about subdomains and preloading) and W008 (TLS and the HTTP-to-HTTPS
# redirect belong to whatever ends TLS in front of the gateway).
SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008"]

REDIS_URL = env.str("REDIS_URL", default="")
# Per worker process and client (the rate limiter, the event logs): gateway_project/redis_clients.py.
REDIS_POOL_MAX_SIZE = env.int("REDIS_POOL_MAX_SIZE", default=32)
REDIS_POOL_TIMEOUT = env.float("REDIS_POOL_TIMEOUT", default=5.0)

# Fernet keys that seal the gateway's compaction items (gateway_project/sealing.py): the first seals,
# every one opens, so a key is rotated by putting the new one first and dropping the old one once
# the items it sealed are no longer needed. Unset: a key derived from SECRET_KEY (HKDF-SHA256).
GATEWAY_COMPACTION_KEYS = [key.strip() for key in env.list("GATEWAY_COMPACTION_KEYS", default=[]) if key.strip()]
try:
    check_keys(GATEWAY_COMPACTION_KEYS)
except ValueError as exc:
    sys.stderr.write(f"config error: GATEWAY_COMPACTION_KEYS: {exc}\n")
    raise SystemExit(2) from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "conversations_app",
    "responses_app",
    # Its database backends and model mixin export django_db_* and django_model_* beside the
    # gateway's families (gateway_project.observability.metrics); its HTTP middleware is not used.
    "django_prometheus",
    "identity_app",
]
# django-prometheus's buckets for django_db_query_duration_seconds: its default starts at 10 ms,
# above most of the gateway's queries, which would all land in the first bucket.
PROMETHEUS_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              float("inf"))

# The seed's order: request id/logging -> tracing -> metrics -> rate limit -> auth -> views.
MIDDLEWARE = [
    "gateway_project.middleware.logging.LoggingMiddleware",
    "gateway_project.middleware.tracing.TracingMiddleware",
    "gateway_project.middleware.metrics.MetricsMiddleware",
    "gateway_project.middleware.errors.ApiErrorMiddleware",
    "gateway_project.middleware.ratelimit.RateLimitMiddleware",
    "gateway_project.middleware.auth.AuthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # ADMIN_MIDDLEWARE below, on every path but the API's.
    "gateway_project.middleware.admin_only.AdminOnlyMiddleware",
    # Content-Length on every answer that is not streamed, the API's included.
    "django.middleware.common.CommonMiddleware",
    # X-Frame-Options: DENY, so the admin cannot be framed (clickjacking).
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# What only the admin's pages need, run by AdminOnlyMiddleware in this order where it stands in
# MIDDLEWARE, and skipped on API paths (/v1/...), which authenticate with keys and are CSRF-exempt.
ADMIN_MIDDLEWARE = [
    # The admin's static files, served by the gateway's own gunicorn (no separate web server):
    # compressed copies and far-future caching for the hashed names collectstatic wrote.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# The admin's checks and the deploy check's CSRF warning look for these middlewares in MIDDLEWARE
# only; AdminOnlyMiddleware's own check (gateway_project.middleware.admin_only.check_admin_middleware)
# looks in ADMIN_MIDDLEWARE too, and fails `manage.py check` when they are in neither.
SILENCED_SYSTEM_CHECKS += ["admin.E408", "admin.E409", "admin.E410", "security.W003"]

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
    # Pooled connections are checked when Django takes one, by the gateway's backend below, which
    # also sweeps the pool on the first dead one (a Postgres restart kills them all). Django's own
    # CONN_HEALTH_CHECKS would check too, but back off a second between dead connections.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # libpq's own limit (2 s is its minimum) for opening a connection, so a host that drops packets
    # fails as fast as one that refuses them. A connect_timeout in DATABASE_URL wins.
    options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=2))
    # Parameters sent apart from the statement, and a statement prepared on a connection once it has
    # run there 5 times (psycopg's prepare_threshold): Postgres then neither parses nor plans it
    # again. Django turns preparing off unless OPTIONS asks for it (for poolers that cannot keep
    # prepared statements); from 16356df until this was set, this comment said it was on. On, a stored
    # turn costs Postgres 0.2 ms less CPU, a stream 0.38 ms less (-28 % and -32 %), and the worker
    # 0.05-0.13 ms less (issue 13). DB_SERVER_SIDE_BINDING=false turns both off: Django's client-side
    # binding cursor prepares nothing (PgBouncer in transaction mode before 1.21).
    options.setdefault("server_side_binding", env.bool("DB_SERVER_SIDE_BINDING", default=True))
    if options["server_side_binding"]:
        options.setdefault("prepare_threshold", 5)
    # No JIT compiling: the gateway's statements run in well under a millisecond, and Postgres
    # compiles any whose *estimated* cost passes jit_above_cost. After a burst of long answers,
    # before autovacuum had analyzed the item table, the chain read was estimated at 500 items a
    # response and compiled on every run: 21 ms of JIT for 0.3 ms of execution, every chain turn
    # at 28-45 ms instead of 5 (benchmarks/RESULTS.md, tenth session). DB_JIT=true leaves the
    # server's setting; a `-c jit=...` in DATABASE_URL's options wins.
    if not env.bool("DB_JIT", default=False) and "jit=" not in options.get("options", ""):
        options["options"] = f"{options.get('options', '')} -c jit=off".strip()
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
        # After a burst the pool gives back one connection above min_size per this many seconds
        # in which it stayed unused. psycopg_pool's 10 minutes kept a burst's connections open
        # for over an hour (7 to give back per worker); a pool still in use keeps what it uses.
        "max_idle": env.float("DB_POOL_MAX_IDLE", default=60.0),
    }
# The chains each worker stored last, kept so the turn that follows one is not read back from
# Postgres (conversations_app.chain_memory): a budget per worker, in MB of what the kept items hold
# in memory (their JSON and about 700 bytes an item); 0: off.
CHAIN_MEMORY_MB = env.float("CHAIN_MEMORY_MB", default=8.0)
# How long a request may wait for a pooled connection while Postgres is up but every connection
# is busy (a burst): each single wait is DB_POOL_TIMEOUT, renewed while the pool makes no failed
# connection attempt (gateway_project/db_backends/postgresql). A down database still fails fast.
DB_POOL_BUSY_TIMEOUT = env.float("DB_POOL_BUSY_TIMEOUT", default=10.0)
if test_db_name := env.str("TEST_DB_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": test_db_name}
# Set after the pool block, which tests for Django's engine name: django-prometheus's subclasses
# of the same backends count and time every query (django_db_* on the metrics endpoint,
# docs/observability.md); with Postgres they keep Django's connection pool, and the gateway's own
# subclass checks pooled connections at checkout (gateway_project/db_backends/postgresql).
DATABASES["default"]["ENGINE"] = {
    "django.db.backends.postgresql": "gateway_project.db_backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}.get(DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"])

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
# collectstatic writes a hashed copy of each file (cache-busting) and gzip/Brotli-ready compressed
# ones; WhiteNoise serves them with a year's Cache-Control. Needs `manage.py collectstatic` before
# start (scripts/run does it; the production steps in the README name it).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Django enforces the body limit when the view reads request.body; the error middleware turns it
# into a 413 with the OpenAI error shape.
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY.server.max_request_body_size

# JSON (or text) lines on stdout, each with request_id, trace_id and span_id: docs/observability.md.
LOGGING = logging_config(GATEWAY.logging.format, GATEWAY.logging.python_level)
