"""CPU time and peak memory of the gunicorn master and its workers while a load runs.

Memory is sampled from a thread rather than read at the end: a worker's RSS falls back once a
burst of streams is over, and the figure the issue bounds is the peak. CPU needs no sampling (it
only grows): `tree_cpu_times` before and after.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import psutil


def tree_cpu_times(master_pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the master and all its descendants so far, including the
    workers that have exited: gunicorn recycles a worker after max_requests (20,000 +- 2,000),
    which a full suite run reaches, and the live tree alone then lost the old worker's whole CPU
    time (a negative figure). The master's reaped children are in its own children_* times."""
    master = psutil.Process(master_pid)
    own = master.cpu_times()
    user, system = own.user + own.children_user, own.system + own.children_system
    for process in master.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue  # gone meanwhile
        user += times.user
        system += times.system
    return user, system


def tree_rss(master_pid: int) -> int:
    """Resident bytes of the master and all its descendants."""
    return _tree_sum(master_pid, lambda process: process.memory_info().rss)


def tree_pss(master_pid: int) -> int:
    """Proportional set size of the master and all its descendants: each page counted once across
    them (a page shared by n of them counts 1/n in each). Summed RSS counts the pages the workers
    share with the master (the interpreter, the libraries, what was imported before the fork) once
    per process, so it overstates what the instance holds; PSS does not. Linux only (smaps_rollup)."""
    return _tree_sum(master_pid, lambda process: process.memory_full_info().pss)


def _tree_sum(master_pid: int, read: Callable[[psutil.Process], int]) -> int:
    master = psutil.Process(master_pid)
    total = 0
    for process in [master, *master.children(recursive=True)]:
        try:
            total += read(process)
        except (psutil.Error, AttributeError):
            continue  # gone meanwhile, or (PSS) not on this platform
    return total


class PeakRss:
    """`with PeakRss(pid, interval) as peak: ...; peak.bytes` (summed RSS), `peak.pss_bytes` (PSS)."""

    def __init__(self, master_pid: int, interval: float = 0.1, *, pss: bool = False) -> None:
        self.master_pid = master_pid
        self.interval = interval
        self.bytes = 0
        self.pss = pss
        self.pss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.bytes = max(self.bytes, tree_rss(self.master_pid))
        if self.pss:
            self.pss_bytes = max(self.pss_bytes, tree_pss(self.master_pid))

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


def pin_apart(workers: list[psutil.Process], others: list[psutil.Process]) -> None:
    """The workers alone on CPU 0; every thread of this process (the load, the fake upstreams and
    receivers it runs), `others` (gunicorn masters), Postgres and Redis on CPU 1. py-spy and psutil
    then see a worker's own work, not its waits for a preempted peer on two shared cores."""
    for thread in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(thread), {1})
    for process in others:
        os.sched_setaffinity(process.pid, {1})
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith(("postgres", "redis")):
            try:
                os.sched_setaffinity(process.pid, {1})
            except OSError:
                continue
    for process in workers:
        os.sched_setaffinity(process.pid, {0})
