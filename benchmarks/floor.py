"""Floors under the gateway's CPU per request: the same small non-streamed POST /v1/responses, the
same load, side by side, against apps that each do only part of a turn's work.

    .venv/bin/python benchmarks/floor.py [--requests 500] [--rounds 5] [--concurrency 10]

Targets, each under gunicorn with 2 gevent workers (benchmarks/floor_apps.py says what each does):

- `hello`: gunicorn + gevent + loopback TCP, a fixed answer;
- `django`: Django with no middleware, a fixed answer;
- `io`: a stored turn's input/output with no framework (orjson, one Redis EVALSHA, one urllib3
  POST upstream, one psycopg INSERT); `io, unstored` without the INSERT;
- the gateway with everything on (request_cpu.py's setup: API keys, Redis limits, metrics, JSON
  logs, tracing at 10 %), with `store: false` and stored.

All talk to the same fake upstream (Chat Completions, first byte after 20 ms), and batches
alternate between targets round by round. The figure is request_cpu.py's: user+system CPU of the
gunicorn master and workers per request, median over rounds with the lowest and highest. What
the gateway costs above `io` is what its framework and features cost; `io` itself is what any
design on these libraries pays. Needs Postgres at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import request_cpu  # noqa: E402
from benchmarks.process_tree import tree_cpu_times  # noqa: E402
from tests.e2e.gunicorn import create_database, drop_database, free_port  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402


class FloorApp:
    """One of floor_apps' WSGI apps under gunicorn (2 gevent workers, the gateway's keep-alive)."""

    key = "floor"

    def __init__(self, name: str, app: str, env: dict[str, str]) -> None:
        self.name = name
        self.app = app
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FloorApp:
        self.proc = subprocess.Popen(  # noqa: S603 - gunicorn of this virtualenv, our own arguments
            [str(Path(sys.executable).parent / "gunicorn"), "-k", "gevent", "-w", "2", "--keep-alive", "5",
             "-b", f"127.0.0.1:{self.port}", self.app],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.post(f"{self.base_url}/responses", json=request_cpu.BODY, timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self._stop()  # __exit__ is not called when __enter__ raises
        self._log.seek(0)
        log = self._log.read().decode(errors="replace")
        self._log.close()
        raise RuntimeError(f"{self.name} did not answer:\n{log}")

    def __exit__(self, *exc: object) -> None:
        self._stop()
        self._log.close()

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def cpu_seconds(self) -> tuple[float, float]:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return tree_cpu_times(self.proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()

    upstream = request_cpu.fake_upstream()
    collector = GrpcReceiver()
    prefix = f"bench:floor:{secrets.token_hex(4)}:"
    database = f"floor_{secrets.token_hex(4)}"
    database_url = create_database(database)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE floor_turns (id text PRIMARY KEY, body jsonb NOT NULL, "
                     "created_at timestamptz NOT NULL DEFAULT now())")
    env = {"FLOOR_UPSTREAM": f"{upstream.url}/v1", "FLOOR_REDIS_URL": request_cpu.REDIS_URL,
           "FLOOR_DATABASE_URL": database_url}
    load = request_cpu.Load(args.concurrency)
    figures: dict[str, list[float]] = {}
    try:
        with ExitStack() as stack:
            gateway = stack.enter_context(request_cpu.Gateway(
                ROOT, request_cpu.config(upstream.url, collector.endpoint, prefix)))
            # (name, target, request body); None: request_cpu's body, stored by default.
            targets: list[tuple[str, request_cpu.Target, dict[str, object] | None]] = [
                ("hello", stack.enter_context(FloorApp("hello", "benchmarks.floor_apps:hello", env)), None),
                ("django", stack.enter_context(FloorApp("django", "benchmarks.floor_django:application", env)), None),
                ("io, unstored", stack.enter_context(FloorApp("io", "benchmarks.floor_apps:io_unstored", env)), None),
                ("io", stack.enter_context(FloorApp("io", "benchmarks.floor_apps:io", env)), None),
                ("gateway, store: false", gateway, {**request_cpu.BODY, "store": False}),
                ("gateway, stored", gateway, None),
            ]
            for _name, target, body in targets:
                load.run(target, args.concurrency * 5, stream=False, body=body)
            for round_ in range(args.rounds):
                for name, target, body in targets if round_ % 2 == 0 else targets[::-1]:
                    ms, _kernel = request_cpu.measure(target, load, args.requests, stream=False, body=body)
                    figures.setdefault(name, []).append(ms)
                    print(f"round {round_ + 1} {name}: {ms:.2f} ms", file=sys.stderr)
    finally:
        load.close()
        upstream.close()
        collector.close()
        client = redis.Redis.from_url(request_cpu.REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*")) + list(client.scan_iter(match="floor:*"))
        if keys:
            client.delete(*keys)
        client.close()
        drop_database(database)

    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.rounds} rounds x {args.requests} "
          f"non-streamed requests per batch, concurrency {args.concurrency}, upstream first byte after "
          f"{request_cpu.UPSTREAM_LATENCY * 1000:.0f} ms.\n")
    print("| target | CPU ms/request, median | lowest | highest |")
    print("|---|---:|---:|---:|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
