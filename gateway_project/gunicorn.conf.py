"""gunicorn configuration: `gunicorn -c gateway_project/gunicorn.conf.py gateway_project.wsgi`.

gevent workers: each request is a greenlet, so an idle stream waiting on its upstream costs a
greenlet, not an OS thread, and (see conversations_app.store.release_connection) no database
connection. `-b` on the command line overrides the bind address from config.yaml.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway_project.config import ConfigError, load_config  # noqa: E402

_config_path = os.environ.get("GATEWAY_CONFIG", str(Path(__file__).resolve().parent.parent / "config.yaml"))
try:
    _config = load_config(_config_path)
except ConfigError as exc:
    sys.stderr.write(f"config error: {exc}\n")
    raise SystemExit(2) from None

bind = [os.environ.get("GATEWAY_BIND", _config.server.bind)]
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "1000"))
# gevent workers heartbeat independently of request length, so long streams are not killed.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so slow leaks in any dependency cannot grow without bound.
max_requests = 20000
max_requests_jitter = 2000
accesslog = None
errorlog = "-"
loglevel = "warning"
