"""gunicorn configuration: `gunicorn -c gateway_project/gunicorn.conf.py gateway_project.wsgi`.

gevent workers: each request is a greenlet, so an idle stream waiting on its upstream costs a
greenlet, not an OS thread, and (see conversations_app.store.release_connection) no database
connection. `-b` on the command line overrides the bind address from config.yaml.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway_project import startup
from gateway_project.config import ConfigError, load_config

_config_path = os.environ.get("GATEWAY_CONFIG", str(Path(__file__).resolve().parent.parent / "config.yaml"))
try:
    _config = load_config(_config_path)
    # Here as well as in settings, so a refused key stops the master once instead of every worker
    # failing to boot in turn.
    startup.check_secret_key(os.environ)
except (ConfigError, startup.StartupError) as exc:
    sys.stderr.write(f"config error: {exc}\n")
    raise SystemExit(2) from None

bind = [os.environ.get("GATEWAY_BIND", _config.server.bind)]
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "1000"))
# gevent workers heartbeat independently of request length, so long streams are not killed.
timeout = 60
# On SIGTERM (and max_requests recycling) a worker stops accepting and lets open streams finish;
# only shortly before this runs out are they cut, and stored as incomplete (responses_app.
# worker_lifecycle). The default outlasts the longest turn (server.turn_timeout), so a deploy never
# cuts a stream that is within its timeouts; lower it with GATEWAY_GRACEFUL_TIMEOUT to deploy faster.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT") or _config.server.turn_timeout + 30)
keepalive = 5
# Recycle workers now and then so slow leaks in any dependency cannot grow without bound.
max_requests = 20000
max_requests_jitter = 2000
accesslog = None
errorlog = "-"
loglevel = "warning"


# Observability (gateway_project/observability/gunicorn_hooks.py). Tracing starts in each worker
# when Django loads the tracing middleware: after the fork and after gevent has patched the
# standard library, which the exporters' sockets and the span batch thread need.
from gateway_project.observability import gunicorn_hooks as _obs  # noqa: E402


def on_starting(server: Any) -> None:
    # The effective bind (-b and GATEWAY_BIND included) is known only now, before any socket is open.
    try:
        startup.check_exposure(_config, server.cfg.address)
    except startup.StartupError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        raise SystemExit(2) from None
    _obs.on_starting(_config)


def when_ready(server: Any) -> None:
    # One line for the operator (gunicorn's own start-up lines are below loglevel): where, which
    # file, what is on, and which provider entries lack a key (their models answer 503; others work).
    sys.stderr.write(startup.summary(_config, _config_path, server.LISTENERS, server.num_workers, os.environ) + "\n")
    sys.stderr.flush()


def child_exit(server: Any, worker: Any) -> None:
    _obs.child_exit(worker)


def post_worker_init(worker: Any) -> None:
    # In the worker, after Django is loaded: lease, sweep of turns dead workers left, shutdown handling.
    from responses_app import worker_lifecycle

    worker_lifecycle.start(worker)
    # Everything loaded so far (Django, the settings, the models, the providers) lives as long as
    # the worker: move it out of the garbage collector's generations, so that the collections
    # requests trigger do not walk all of it again each time (gc.freeze(), as CPython's docs advise
    # for forking servers). Nothing is collected differently: those objects are never garbage.
    gc.freeze()
    # A request allocates thousands of objects, and the default first threshold (700 allocations)
    # ran a young-generation collection several times per request; almost nothing of a request
    # is cyclic garbage. Every 10,000 allocations instead, and the older generations every 10 of
    # those (the default ratio): -0.10 ms of CPU per request, -0.16 per stream (issue 13), with
    # worker memory as flat as before (benchmarks/soak.py).
    gc.set_threshold(10_000, 10, 10)


def worker_exit(server: Any, worker: Any) -> None:
    try:
        from responses_app import worker_lifecycle

        worker_lifecycle.stop()
    except Exception as exc:  # noqa: BLE001 - a worker that failed to boot has no Django to stop
        server.log.warning("worker %s exit: %s", worker.pid, exc)
    _obs.worker_exit()


def on_exit(server: Any) -> None:
    _obs.on_exit()
