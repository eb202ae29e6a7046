"""CPU time one gateway worker spends per WebSocket-mode turn, for two checkouts side by side.

    .venv/bin/python benchmarks/websocket_turn_cpu.py --tree A --tree B [--unstored] [--rounds 10] [--block 6]

The 20-turn tool loop of websocket_tool_loop.py (its fake upstream, its client, two loops at a
time), against each checkout under gunicorn with one gevent worker. Both run at once; their
workers share CPU 0 and everything else (this script, the upstream, the masters, Postgres, Redis)
is on CPU 1, so a worker's CPU time is its own work, not the wait for a preempted peer. Blocks of
`--block` seconds alternate between the checkouts (the order flips every round, and half of the
rounds run with the gateways started in the reverse order: start_order.py), so the machine's drift
falls on both alike; printed: each checkout's median CPU ms per turn over the rounds, and the
median of the rounds' differences (B - A) with how many rounds had B lower. websocket_tool_loop.py
measures the loop end to end; this measures what a change does to one worker's CPU, which the
loop's latency on two shared cores cannot show.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psutil
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The harness, importable once the checkout is on sys.path (E402).
from benchmarks import start_order  # noqa: E402
from benchmarks.process_tree import pin_apart  # noqa: E402
from benchmarks.websocket_tool_loop import ToolLoopUpstream, websocket_loop  # noqa: E402
from tests.e2e import gunicorn as harness  # noqa: E402
from tests.observability.e2e_config import gateway_yaml  # noqa: E402

TURNS = 20
LOOPS_AT_ONCE = 2


_loop_numbers = itertools.count(1000)  # each loop's first input differs, as different users' would


def cpu_per_turn(pool: ThreadPoolExecutor, client: OpenAI, worker: psutil.Process, seconds: float,
                 store: bool) -> float:
    """Loops for `seconds` (LOOPS_AT_ONCE at a time); the worker's CPU ms per turn meanwhile."""
    stop = threading.Event()

    def drive() -> int:
        turns = 0
        while not stop.is_set():
            websocket_loop(client, next(_loop_numbers), TURNS, store)
            turns += TURNS
        return turns

    before = sum(worker.cpu_times()[:2])
    running = [pool.submit(drive) for _ in range(LOOPS_AT_ONCE)]
    time.sleep(seconds)
    stop.set()
    turns = sum(future.result() for future in running)
    return (sum(worker.cpu_times()[:2]) - before) / turns * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, required=True, help="a checkout (twice)")
    parser.add_argument("--unstored", action="store_true", help="turns with `store: false`")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=float, default=6.0, help="seconds of load per checkout per round")
    args = parser.parse_args()
    if len(args.tree) != 2:
        parser.error("give --tree twice")
    trees = [tree.resolve() for tree in args.tree]
    store = not args.unstored
    upstream = ToolLoopUpstream(TURNS)
    per_turn: list[list[float]] = [[], []]
    try:
        for starts, rounds in start_order.halves([0, 1], args.rounds):
            with ExitStack() as stack, ThreadPoolExecutor(LOOPS_AT_ONCE) as pool:
                gateways: dict[int, harness.GatewayProcess] = {}
                for which in starts:
                    harness.ROOT = trees[which]  # the harness migrates and runs gunicorn from ROOT
                    gateways[which] = stack.enter_context(harness.GatewayProcess(
                        gateway_yaml(upstream.url, metrics=True, log_level="warn"), workers=1))
                masters = {which: psutil.Process(gateway.proc.pid)
                           for which, gateway in gateways.items() if gateway.proc is not None}
                workers = {which: master.children()[0] for which, master in masters.items()}
                pin_apart(list(workers.values()), list(masters.values()))
                clients = {which: OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=30)
                           for which, gateway in gateways.items()}
                for client in clients.values():  # warm-up: connections, pools, code paths
                    list(pool.map(lambda index, c=client: websocket_loop(c, index, TURNS, store), range(4)))
                for round_ in rounds:
                    for which in (0, 1) if round_ % 2 == 0 else (1, 0):
                        per_turn[which].append(cpu_per_turn(pool, clients[which], workers[which], args.block,
                                                            store))
                    print(f"round {round_ + 1}/{args.rounds}: {per_turn[0][-1]:.2f} / {per_turn[1][-1]:.2f} ms",
                          file=sys.stderr)
    finally:
        upstream.close()
    print(f"WebSocket turns, store: {str(store).lower()}, {args.rounds} rounds of {args.block:g} s per checkout")
    for tree, figures in zip(trees, per_turn, strict=True):
        print(f"{tree}: {statistics.median(figures):.2f} ms/turn ({min(figures):.2f}-{max(figures):.2f})")
    differences = [b - a for a, b in zip(per_turn[0], per_turn[1], strict=True)]
    print(f"B - A: median {statistics.median(differences):+.2f} ms/turn, B lower in "
          f"{sum(d < 0 for d in differences)} of {len(differences)} rounds "
          f"({' '.join(f'{d:+.2f}' for d in differences)})")


if __name__ == "__main__":
    main()
