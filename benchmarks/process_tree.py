"""Peak memory of the gunicorn master and its workers while a load runs, sampled from a thread.

Sampled rather than read at the end: a worker's RSS falls back once a burst of streams is over,
and the figure the issue bounds is the peak. CPU needs no sampling (it only grows): see
websocket_tool_loop.gateway_cpu_seconds.
"""

from __future__ import annotations

import threading
from typing import Any

import psutil


def tree_rss(master_pid: int) -> int:
    """Resident bytes of the master and all its descendants."""
    master = psutil.Process(master_pid)
    total = 0
    for process in [master, *master.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue  # gone meanwhile
    return total


class PeakRss:
    """`with PeakRss(pid, interval) as peak: ...; peak.bytes`"""

    def __init__(self, master_pid: int, interval: float = 0.1) -> None:
        self.master_pid = master_pid
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.bytes = max(self.bytes, tree_rss(self.master_pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
