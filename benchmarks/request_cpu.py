"""CPU time the gateway spends per small POST /v1/responses, everything on, for one or more checkouts.

    .venv/bin/python benchmarks/request_cpu.py [--tree PATH ...] [--requests 500] [--rounds 5] [--concurrency 10]
        [--profile SECONDS]

Each checkout (default: this one; give `--tree` twice, e.g. an older commit unpacked with
`git archive`, to compare) runs under gunicorn (2 gevent workers, its own Postgres database) with
API-key auth, Redis rate limits (set high), metrics, JSON access logs at info and tracing at 10 %
to an OTLP/gRPC receiver on loopback, in front of the fake OpenAI upstream answering after 20 ms.
All checkouts run side by side, and batches alternate between them (a non-streamed batch, then a
streamed one, per checkout per round, the checkouts' order flipping every round), so drift on a
shared machine falls on all of them alike. Half of the rounds run with the gateways started in
the order given, half with them restarted in the reverse order (a gateway started earlier measured
higher than an identical one started after it): give an even number of rounds, 8 or more.
The figure is user+system CPU of the gunicorn master and workers (psutil) during a batch, divided
by its requests; printed as the median over rounds with the lowest and highest, the part spent in
the kernel (system time: mostly loopback TCP, whose receiving side runs in the sender's system call),
and, for each checkout, the median over rounds of its difference to the first checkout in the same round.

`--profile N` instead records N seconds of one worker of the first checkout with py-spy under
non-streamed and streamed load and prints its top functions (own and cumulative). With `--pin`
the gateway runs one worker, alone on CPU 0, with everything else (this script and its load,
the upstream, Postgres, Redis, py-spy) on CPU 1. py-spy counts a thread that is runnable but not
running as busy: on two shared cores a worker is preempted right after each write that wakes
another process, and an unpinned profile charges that wait to the write's caller (psycopg's
`_execute_send`, gevent's `send`). Pinned, busy samples are CPU time.
Needs Postgres at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from socketserver import StreamRequestHandler
from typing import Protocol, cast

import psutil
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# The test harness, importable once the checkout is on sys.path (E402).
from benchmarks import start_order  # noqa: E402
from benchmarks.process_tree import pin_apart, tree_cpu_times  # noqa: E402
from tests.e2e import gunicorn as harness  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
UPSTREAM_LATENCY = 0.020
BODY = {"model": "gpt-test", "input": "Say something short."}


def config(upstream: str, collector: str, prefix: str) -> str:
    return json.dumps({  # JSON is valid YAML
        "logging": {"format": "json", "level": "info"},
        "auth": {"enabled": True},
        "rate_limit": {"enabled": True, "requests_per_minute": 10_000_000, "redis_key_prefix": prefix},
        "observability": {
            "enabled": True,
            "metrics": {"enabled": True, "path": "/metrics"},
            "tracing": {"enabled": True, "sampler": {"type": "probability", "rate": 0.1},
                        "exporter": {"type": "otlp", "endpoint": collector, "protocol": "grpc", "insecure": True}},
        },
        "providers": {"openai": {"type": "openai", "api_key": "x", "endpoint": f"{upstream}/v1"}},
        "models": [{"name": "gpt-test", "provider": "openai", "provider_model_id": "gpt-4o-mini",
                    "pricing": {"input": 0.15, "output": 0.6}}],
    })


def fake_upstream(first_byte_delay: float = UPSTREAM_LATENCY) -> FakeOpenAI:
    """The fake OpenAI upstream, answering every request after `first_byte_delay`."""
    upstream = FakeOpenAI()
    # http.server writes headers and body in two segments; with Nagle's algorithm and delayed ACKs
    # that adds ~40 ms to every answer, which would swamp the differences being measured.
    cast("type[StreamRequestHandler]", upstream.httpd.RequestHandlerClass).disable_nagle_algorithm = True
    upstream.default_step = Reply(first_byte_delay=first_byte_delay)
    return upstream


class Gateway:
    """One checkout under gunicorn, with an API key, and the CPU time of its process tree."""

    def __init__(self, tree: Path, config_yaml: str, *, workers: int = 2, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.tree = tree
        self.process = harness.GatewayProcess(config_yaml, workers=workers, env={"REDIS_URL": REDIS_URL, **(env or {})},
                                              args=args)
        self.key = ""

    def __enter__(self) -> Gateway:
        harness.ROOT = self.tree  # the harness runs manage.py and gunicorn from ROOT
        try:
            self.process.start()
            done = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", "bench", "--owner", "acme"],
                                  cwd=self.tree, env=self.process.env(), check=True, capture_output=True, text=True)
        finally:
            harness.ROOT = ROOT
        self.key = done.stdout.strip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def tree_processes(self) -> list[psutil.Process]:
        if self.process.proc is None:
            raise RuntimeError("the gateway is not running")
        master = psutil.Process(self.process.proc.pid)
        return [master, *master.children(recursive=True)]

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU seconds of the process tree so far, exited workers included."""
        if self.process.proc is None:
            raise RuntimeError("the gateway is not running")
        return tree_cpu_times(self.process.proc.pid)


class Target(Protocol):
    """What the load and the CPU figure need of what they measure (a Gateway, or floor.py's apps)."""

    key: str

    @property
    def base_url(self) -> str: ...

    def cpu_seconds(self) -> tuple[float, float]: ...


class Load:
    """`concurrency` client threads, each with its own keep-alive session."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.sessions = [requests.Session() for _ in range(concurrency)]

    def close(self) -> None:
        self.pool.shutdown()
        for session in self.sessions:
            session.close()

    def run(self, gateway: Target, count: int, *, stream: bool, body: dict[str, object] | None = None) -> None:
        url = f"{gateway.base_url}/responses"
        headers = {"Authorization": f"Bearer {gateway.key}"}
        sent: dict[str, object] = {**(body or BODY), "stream": True} if stream else dict(body or BODY)

        def one(index: int) -> None:
            session = self.sessions[index % self.concurrency]
            try:
                response = session.post(url, json=sent, headers=headers, timeout=30, stream=stream)
            except requests.ConnectionError:
                # A kept-alive connection the gateway closed (keepalive 5 s) while another checkout
                # was being measured, just as this request was sent on it: once more, on a new one.
                response = session.post(url, json=sent, headers=headers, timeout=30, stream=stream)
            text = response.text
            if response.status_code != 200 or (stream and "response.completed" not in text):
                raise RuntimeError(f"{response.status_code}: {text[:300]}")

        list(self.pool.map(one, range(count)))


def measure(gateway: Target, load: Load, count: int, *, stream: bool,
            body: dict[str, object] | None = None) -> tuple[float, float]:
    """CPU ms per request, and the part of it spent in the kernel (mostly loopback TCP: the
    client's, the upstream's, Postgres' and Redis' sockets)."""
    user, system = gateway.cpu_seconds()
    load.run(gateway, count, stream=stream, body=body)
    user_after, system_after = gateway.cpu_seconds()
    return (user_after - user + system_after - system) / count * 1000, (system_after - system) / count * 1000


def profile(gateway: Gateway, load: Load, seconds: int, *, stream: bool, keep: Path | None = None,
            body: dict[str, object] | None = None) -> str:
    """py-spy's view of one worker under load; `keep`: where to leave its raw stacks too (with the
    number of requests the load made meanwhile, as `# requests N` on its first line)."""
    worker = gateway.tree_processes()[1]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        spy = subprocess.Popen([  # noqa: S603 - py-spy of this virtualenv, our own arguments
                               str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(worker.pid),
                                "--duration", str(seconds), "--rate", "250", "--format", "raw", "--output", str(raw),
                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stop = threading.Event()
        done = 0

        def drive() -> None:
            nonlocal done
            while not stop.is_set():
                load.run(gateway, load.concurrency * 4, stream=stream, body=body)
                done += load.concurrency * 4

        driver = threading.Thread(target=drive)
        driver.start()
        spy.wait()
        stop.set()
        driver.join()
        text = raw.read_text()
        if keep is not None:
            keep.write_text(f"# requests {done}\n{text}")
        return f"requests: {done}\n{summarize(text)}"


def warm_up(gateway: Gateway, load: Load) -> None:
    """Connections, pools and code paths, before anything is measured."""
    load.run(gateway, load.concurrency * 5, stream=False)
    load.run(gateway, load.concurrency * 5, stream=True)


def pin_everything_but(gateway: Gateway) -> None:
    """Its one worker alone on CPU 0; its master and everything else on CPU 1 (process_tree.pin_apart)."""
    master, worker = gateway.tree_processes()[:2]
    pin_apart([worker], [master])


def summarize(raw: str, top: int = 40) -> str:
    """py-spy's raw (collapsed) stacks as the functions with most samples, own and cumulative.
    Idle samples (the gevent hub waiting) are left out, so percentages are of busy time."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    busy = 0
    for line in raw.splitlines():
        if line.startswith("#"):
            continue
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or any(idle in frames[-1] for idle in ("(epoll", "wait (", "select (", "run (gevent/hub")):
            continue
        count = int(count_text)
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    lines = [f"busy samples: {busy}", "", "own:"]
    lines += [f"{n / busy * 100:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "cumulative:"]
    lines += [f"{n / busy * 100:5.1f} %  {frame}" for frame, n in cumulative.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to run (repeatable)")
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS")
    parser.add_argument("--raw", type=Path, help="with --profile: a directory for py-spy's raw stacks")
    parser.add_argument("--unstored", action="store_true", help="with --profile: requests with `store: false`")
    parser.add_argument("--pin", action="store_true",
                        help="with --profile: one worker alone on CPU 0, everything else on CPU 1")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.tree or [ROOT]]

    upstream = fake_upstream()
    collector = GrpcReceiver()
    prefix = f"bench:cpu:{secrets.token_hex(4)}:"
    load = Load(args.concurrency)
    figures: dict[tuple[str, str], list[float]] = {}
    kernel: dict[tuple[str, str], list[float]] = {}
    workers = 1 if args.pin else 2
    try:
        if args.profile:
            with Gateway(trees[0], config(upstream.url, collector.endpoint, prefix), workers=workers) as gateway:
                if args.pin:
                    pin_everything_but(gateway)
                warm_up(gateway, load)
                for stream in (False, True):
                    print(f"## {'streamed' if stream else 'non-streamed'}, {trees[0]}\n")
                    keep = args.raw / f"{'streamed' if stream else 'json'}.txt" if args.raw else None
                    body = {**BODY, "store": False} if args.unstored else None
                    print(profile(gateway, load, args.profile, stream=stream, keep=keep, body=body), "\n")
            return
        # Each checkout its own rate-limit buckets, as two deployments would have.
        buckets = {tree: f"{prefix}{index}:" for index, tree in enumerate(trees)}
        for starts, rounds in start_order.halves(trees, args.rounds):
            with ExitStack() as stack:
                gateways = {tree: stack.enter_context(Gateway(tree, config(upstream.url, collector.endpoint,
                                                                           buckets[tree]), workers=workers))
                            for tree in starts}
                for gateway in gateways.values():
                    warm_up(gateway, load)
                for round_ in rounds:
                    for stream in (False, True):
                        for tree in trees if round_ % 2 == 0 else trees[::-1]:
                            ms, system_ms = measure(gateways[tree], load, args.requests, stream=stream)
                            key = (str(tree), "streamed" if stream else "non-streamed")
                            figures.setdefault(key, []).append(ms)
                            kernel.setdefault(key, []).append(system_ms)
                            print(f"round {round_ + 1} {tree.name} {'stream' if stream else 'json'}: {ms:.2f} ms "
                                  f"({system_ms:.2f} in the kernel)", file=sys.stderr)
    finally:
        load.close()
        upstream.close()
        collector.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()

    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.rounds} rounds x {args.requests} "
          f"requests per batch, concurrency {args.concurrency}, upstream first byte after "
          f"{UPSTREAM_LATENCY * 1000:.0f} ms; {len(collector.spans)} spans received.\n")
    print("| checkout | kind | CPU ms/request, median | lowest | highest | of which kernel, median "
          "| change vs first, median of rounds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (tree, kind), values in figures.items():
        # Paired by round (the batches of one round ran back to back), which cancels most of the drift.
        first = figures[(str(trees[0]), kind)]
        change = statistics.median(value - base for value, base in zip(values, first, strict=True))
        print(f"| {tree} | {kind} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} "
              f"| {statistics.median(kernel[(tree, kind)]):.2f} | {change:+.2f} |")


if __name__ == "__main__":
    main()
