"""Many idle WebSockets on one 2-worker gateway: memory per socket, Postgres connections, liveness.

    .venv/bin/python benchmarks/websocket_idle.py [--sockets 1000] [--create none|stored|unstored] [--hold 20]
        [--cycles 2] [--auth] [--parallel 50]

Starts a fake OpenAI upstream (tests/fakes) and the gateway under gunicorn (2 gevent workers,
metrics on, auth off, its own fresh Postgres database), warms it up (HTTP requests and a few
WebSocket responses, so that first-use imports and pools are not counted as the sockets' memory),
then, from one asyncio client process (`websockets.asyncio.client`, no client pings, so the
sockets are really idle):

1. opens `--sockets` WebSockets on /v1/responses, `--parallel` handshakes at a time; with
   `--create stored|unstored` each then runs one tiny `response.create` (`store: true|false`; an
   unstored response stays in the connection's memory for a continuation) read to `response.completed`;
2. holds them all idle for `--hold` seconds (the gateway's idle timeout is 5 min; its pings,
   every 20 s, are answered by the client library);
3. checks they are all alive (a ping on each, every pong awaited), that the gateway counts them
   (`gateway_websocket_connections`), and that a normal `POST /v1/responses` still succeeds;
4. closes them all (closing handshake) and looks again.

Each worker's RSS (psutil) and the sockets it holds are read after each step, and the Postgres
connections to the gateway's database (`pg_stat_activity`) are sampled every 0.1 s throughout
and compared with the pool bound (workers x `DB_POOL_MAX_SIZE`). Prints Markdown; exits non-zero
when a check fails. Needs Postgres at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test harness, importable once the checkout is on sys.path (E402).
from tests.e2e.gunicorn import PG_ADMIN, GatewayProcess  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.observability.e2e_config import gateway_yaml  # noqa: E402

MODEL = "gpt-test"
WORKERS = 2
MB = 1024 * 1024


# --- observing the gateway and Postgres -------------------------------------------------------------

class PostgresSampler:
    """Connections to the gateway's database, every `interval` seconds, with the peak per phase."""

    def __init__(self, database: str, interval: float = 0.1) -> None:
        self.database = database
        self.interval = interval
        # The admin connection is to another database, so it is never counted.
        self.conn = psycopg.connect(PG_ADMIN, autocommit=True)
        self.lock = threading.Lock()
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def count(self) -> int:
        with self.lock:
            row = self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                    (self.database,)).fetchone()
        return int(row[0]) if row else 0

    def enter(self, phase: str) -> None:
        self.phase = phase

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            count = self.count()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), count)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)


@dataclass
class Snapshot:
    step: str
    rss: dict[int, int]  # worker pid -> bytes
    sockets: dict[int, int]  # worker pid -> established TCP connections on the gateway's port
    gauge: float | None  # gateway_websocket_connections
    postgres: int

    @property
    def total(self) -> int:
        return sum(self.rss.values())


def workers(master_pid: int) -> list[psutil.Process]:
    return sorted(psutil.Process(master_pid).children(), key=lambda p: p.pid)


def established(worker: psutil.Process, port: int) -> int:
    return sum(1 for c in worker.net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def websocket_gauge(url: str) -> float | None:
    text = requests.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("gateway_websocket_connections"):
            return float(line.rsplit(" ", 1)[1])
    return None


def snapshot(step: str, gw: GatewayProcess, pg: PostgresSampler) -> Snapshot:
    assert gw.proc is not None  # noqa: S101 - started
    procs = workers(gw.proc.pid)
    return Snapshot(step, {p.pid: p.memory_info().rss for p in procs}, {p.pid: established(p, gw.port) for p in procs},
                    websocket_gauge(gw.url), pg.count())


# --- the clients ---------------------------------------------------------------------------------------

async def respond(ws: ClientConnection, store: bool, text: str) -> None:
    await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": text, "store": store}))
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if event["type"] == "response.completed":
            return
        if event["type"] in ("response.failed", "response.incomplete", "error"):
            raise RuntimeError(f"response.create failed: {json.dumps(event)[:300]}")


async def open_sockets(url: str, count: int, parallel: int, create: str, key: str | None) -> list[ClientConnection]:
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> ClientConnection:
        async with gate:
            # No client pings (the gateway's are answered), a generous handshake timeout for a busy machine.
            ws = await connect(url, additional_headers=auth_headers(key), ping_interval=None, open_timeout=60,
                               close_timeout=10)
            if create != "none":
                await respond(ws, create == "stored", f"socket {index}: hi")
            return ws

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def ping_all(sockets: list[ClientConnection], timeout: float) -> int:
    """How many sockets answer a ping within `timeout` (each is open, and the gateway reads it)."""
    async def one(ws: ClientConnection) -> bool:
        try:
            await asyncio.wait_for(await ws.ping(), timeout)
        except Exception:  # noqa: BLE001 - a closed or silent socket is what this counts
            return False
        return True

    return sum(await asyncio.gather(*(one(ws) for ws in sockets)))


async def close_all(sockets: list[ClientConnection]) -> int:
    """Close every socket with the closing handshake; how many the gateway answered cleanly."""
    async def one(ws: ClientConnection) -> bool:
        await ws.close()
        return ws.state is State.CLOSED and ws.close_code == 1000

    return sum(await asyncio.gather(*(one(ws) for ws in sockets)))


# --- the run -------------------------------------------------------------------------------------------

def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"{needed} file descriptors needed; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def create_key(gw: GatewayProcess) -> str:
    done = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", "bench", "--owner", "bench"],
                          cwd=ROOT, env=gw.env(), check=True, capture_output=True, text=True)
    return done.stdout.strip()


def gateway_config(upstream_url: str, auth: bool) -> str:
    config = json.loads(gateway_yaml(upstream_url, metrics=True, log_level="warn"))
    config["auth"] = {"enabled": auth}
    return json.dumps(config)  # JSON is YAML


def warm_up(gw: GatewayProcess, ws_url: str, key: str | None) -> None:
    """First-use costs (imports, pools, caches) before the baseline, in both workers."""
    for _ in range(20):
        body = {"model": MODEL, "input": "warm-up"}
        requests.post(f"{gw.base_url}/responses", json=body, headers=auth_headers(key), timeout=30).raise_for_status()

    async def sockets() -> None:
        opened = await open_sockets(ws_url, 40, 10, "stored", key)
        for ws in opened[:20]:
            await respond(ws, False, "warm-up, unstored")
        await close_all(opened)

    asyncio.run(sockets())


@dataclass
class Cycle:
    """One round of open, hold, check and close, and what was seen."""

    held: Snapshot
    checked: Snapshot
    closed: Snapshot
    open_seconds: float
    pongs: int
    ping_seconds: float
    http_status: int
    http_ms: float
    closed_clean: int
    close_seconds: float


async def run_cycle(number: int, args: argparse.Namespace, gw: GatewayProcess, ws_url: str, key: str | None,
                    pg: PostgresSampler) -> Cycle:
    def step(name: str) -> str:
        pg.enter(f"cycle {number}: {name}")
        return pg.phase

    step(f"{args.sockets} open, idle {args.hold:.0f} s")
    began = time.perf_counter()
    sockets = await open_sockets(ws_url, args.sockets, args.parallel, args.create, key)
    open_seconds = time.perf_counter() - began
    print(f"cycle {number}: {len(sockets)} sockets open in {open_seconds:.1f} s", file=sys.stderr)
    await asyncio.sleep(args.hold)
    held = await asyncio.to_thread(snapshot, pg.phase, gw, pg)

    step("after the checks")
    began = time.perf_counter()
    pongs = await ping_all(sockets, 30)
    ping_seconds = time.perf_counter() - began
    began = time.perf_counter()
    answer = await asyncio.to_thread(requests.post, f"{gw.base_url}/responses",
                                     json={"model": MODEL, "input": "still there?"}, headers=auth_headers(key),
                                     timeout=30)
    http_ms = (time.perf_counter() - began) * 1000
    # A few of the idle sockets still serve a response.
    for ws in sockets[::max(1, len(sockets) // 10)]:
        await respond(ws, False, "after idling")
    checked = await asyncio.to_thread(snapshot, pg.phase, gw, pg)

    step("all closed")
    began = time.perf_counter()
    closed_clean = await close_all(sockets)
    close_seconds = time.perf_counter() - began
    await asyncio.sleep(2)
    closed = await asyncio.to_thread(snapshot, pg.phase, gw, pg)
    return Cycle(held, checked, closed, open_seconds, pongs, ping_seconds, answer.status_code, http_ms, closed_clean,
                 close_seconds)


def mb(value: int) -> str:
    return f"{value / MB:.1f}"


def report(args: argparse.Namespace, started: float, base: Snapshot, cycles: list[Cycle], pg: PostgresSampler,
           bound: int) -> list[str]:
    snaps = [base, *(snap for cycle in cycles for snap in (cycle.held, cycle.checked, cycle.closed))]
    pids = sorted({pid for snap in snaps for pid in snap.rss})
    create = {"none": "none", "stored": "one `store: true`", "unstored": "one `store: false`"}[args.create]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}: {args.sockets} WebSockets on one gateway "
        f"({WORKERS} gevent workers), auth {'on' if args.auth else 'off'}, response.create per socket: {create}, "
        f"held idle {args.hold:.0f} s, {len(cycles)} cycle(s) of open/hold/check/close, {os.cpu_count()} CPUs.",
        "",
        "| step | " + " | ".join(f"worker {i + 1} RSS MB (sockets)" for i in range(len(pids)))
        + " | total RSS MB | gateway_websocket_connections | Postgres connections now | Postgres peak in step |",
        "|---|" + "---:|" * (len(pids) + 4),
    ]
    for snap in snaps:
        cells = [f"{mb(snap.rss[pid])} ({snap.sockets[pid]})" if pid in snap.rss else "-" for pid in pids]
        gauge = "-" if snap.gauge is None else f"{snap.gauge:.0f}"
        lines.append(f"| {snap.step} | " + " | ".join(cells)
                     + f" | {mb(snap.total)} | {gauge} | {snap.postgres} | {pg.peaks.get(snap.step, '-')} |")
    first = cycles[0]
    lines += [
        "",
        f"- Memory per idle socket: {(first.held.total - base.total) / args.sockets / 1024:.1f} KiB (total RSS "
        f"{mb(first.held.total - base.total)} MB above the baseline with {args.sockets} sockets open); after closing "
        f"them all, {mb(first.closed.total - base.total)} MB above it.",
    ]
    for number, cycle in enumerate(cycles[1:], start=2):
        lines.append(f"- Cycle {number}, the same again: {mb(cycle.held.total - first.held.total)} MB more than "
                     f"cycle 1 with all open, {mb(cycle.closed.total - first.closed.total)} MB more after closing.")
    for number, cycle in enumerate(cycles, start=1):
        lines.append(
            f"- Cycle {number}: opened in {cycle.open_seconds:.1f} s ({args.parallel} handshakes"
            + (" and creates" if args.create != "none" else "") + " at a time); after "
            f"{args.hold:.0f} s idle {cycle.pongs}/{args.sockets} answered a ping "
            f"({cycle.ping_seconds:.2f} s for all), "
            f"a POST /v1/responses got {cycle.http_status} in {cycle.http_ms:.0f} ms; {cycle.closed_clean}/"
            f"{args.sockets} closed cleanly (1000) in {cycle.close_seconds:.2f} s.")
    lines.append(f"- Postgres connections to the gateway's database: at most {pg.peak} at any 0.1 s sample of the "
                 f"whole run (warm-up included); the pool bound is {bound} ({WORKERS} workers x DB_POOL_MAX_SIZE="
                 f"{bound // WORKERS}).")
    return lines


def failures_of(args: argparse.Namespace, cycles: list[Cycle], pg: PostgresSampler, bound: int) -> list[str]:
    failures = []
    for number, cycle in enumerate(cycles, start=1):
        held_tcp = sum(cycle.held.sockets.values())
        if cycle.held.gauge != args.sockets or held_tcp < args.sockets:
            failures.append(f"cycle {number}: the gateway held {cycle.held.gauge} WebSockets ({held_tcp} TCP "
                            f"connections), not {args.sockets}")
        if cycle.pongs != args.sockets:
            failures.append(f"cycle {number}: only {cycle.pongs} sockets answered a ping")
        if cycle.http_status != 200:
            failures.append(f"cycle {number}: POST /v1/responses answered {cycle.http_status}")
        if cycle.checked.gauge != args.sockets:
            failures.append(f"cycle {number}: after the checks the gateway counted {cycle.checked.gauge} WebSockets")
        if cycle.closed_clean != args.sockets or cycle.closed.gauge != 0:
            failures.append(f"cycle {number}: {cycle.closed_clean} closed cleanly; the gateway still counts "
                            f"{cycle.closed.gauge}")
    if pg.peak > bound:
        failures.append(f"{pg.peak} Postgres connections, above the pool bound {bound}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--create", choices=("none", "stored", "unstored"), default="none",
                        help="one tiny response.create on each socket after opening it")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold them all idle")
    parser.add_argument("--cycles", type=int, default=2,
                        help="open/hold/check/close this many times (a second cycle tells reuse from growth)")
    parser.add_argument("--auth", action="store_true",
                        help="auth on: every upgrade and request carries a gateway API key")
    parser.add_argument("--parallel", type=int, default=50, help="handshakes (and creates) in flight at once")
    args = parser.parse_args()
    # The client's sockets, plus the gateway's (it inherits the limit): a worker may take most of them.
    raise_fd_limit(args.sockets * 2 + 1024)

    upstream = FakeOpenAI()
    upstream.default_step = Reply(text="Hi.")
    bound = WORKERS * int(os.environ.get("DB_POOL_MAX_SIZE", "8"))
    started = time.time()
    cycles: list[Cycle] = []
    try:
        with GatewayProcess(gateway_config(upstream.url, args.auth), workers=WORKERS) as gw:
            key = create_key(gw) if args.auth else None
            ws_url = gw.url.replace("http://", "ws://") + "/v1/responses"
            pg = PostgresSampler(gw.db_name)
            pg.start()
            try:
                warm_up(gw, ws_url, key)
                upstream.reset()
                time.sleep(1)
                pg.enter("baseline")
                base = snapshot("baseline", gw, pg)
                for number in range(1, args.cycles + 1):
                    cycles.append(asyncio.run(run_cycle(number, args, gw, ws_url, key, pg)))
                    upstream.reset()
            finally:
                pg.stop()
    finally:
        upstream.close()

    print("\n".join(report(args, started, base, cycles, pg, bound)))
    if failures := failures_of(args, cycles, pg, bound):
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
