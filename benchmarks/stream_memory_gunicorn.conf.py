"""gunicorn configuration for benchmarks/stream_memory.py: the gateway's own, plus tracemalloc in the
worker and a greenlet that writes a snapshot when asked.

`-c benchmarks/stream_memory_gunicorn.conf.py` after the gateway's `-c` (the last one is used).
STREAM_MEMORY_DIR names a directory: a file `<name>.want` there makes the worker write its
snapshot to `<name>.<pid>.snapshot` (pickled, as `tracemalloc.Snapshot.dump` writes it) and
remove the request. Not for production: tracemalloc slows the worker several times over.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

_gateway = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gateway_project" / "gunicorn.conf.py"))
globals().update({name: value for name, value in _gateway.items() if not name.startswith("__")})

FRAMES = 40


def post_worker_init(worker: Any) -> None:
    _gateway["post_worker_init"](worker)
    import tracemalloc

    import gevent

    tracemalloc.start(FRAMES)
    directory = Path(os.environ["STREAM_MEMORY_DIR"])

    def answer_requests() -> None:
        while True:
            gevent.sleep(0.2)
            for want in directory.glob("*.want"):
                snapshot = tracemalloc.take_snapshot()
                snapshot.dump(str(directory / f"{want.stem}.{os.getpid()}.snapshot"))
                want.unlink()

    gevent.spawn(answer_requests)
