"""gunicorn server hooks for metrics across workers and for flushing traces.

Imported by gateway_project/gunicorn.conf.py in the master process, so nothing here imports
Django or prometheus_client at module level: prometheus_client picks its multiprocess mode from
PROMETHEUS_MULTIPROC_DIR when first imported, which must happen after `on_starting` has set it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gateway_project.config import GatewayConfig

ENV = "PROMETHEUS_MULTIPROC_DIR"
_created_dir: str | None = None


def prepare_multiprocess_dir(config: GatewayConfig) -> str | None:
    """Give all workers one directory of metric files, emptied of a previous run's samples.

    Without it each worker would count only the requests it served and a scrape would show
    whichever worker answered. An operator may choose the directory with PROMETHEUS_MULTIPROC_DIR.
    """
    global _created_dir
    obs = config.observability
    if not (obs.enabled and obs.metrics.enabled):
        return None
    path = os.environ.get(ENV)
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    else:
        path = _created_dir = tempfile.mkdtemp(prefix="gateway-prometheus-")
    os.environ[ENV] = path
    return path


def on_starting(config: GatewayConfig) -> None:
    prepare_multiprocess_dir(config)


def child_exit(worker: Any) -> None:
    """A worker died or was recycled: drop its live-gauge files (its counters stay in the totals)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit() -> None:
    """Graceful worker exit: send the spans still queued."""
    from gateway_project.observability import tracing

    tracing.shutdown()


def on_exit() -> None:
    if _created_dir:
        shutil.rmtree(_created_dir, ignore_errors=True)
