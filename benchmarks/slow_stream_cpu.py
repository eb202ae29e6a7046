"""CPU time the gateway spends per slow stream, for one or more checkouts side by side.

    .venv/bin/python benchmarks/slow_stream_cpu.py [--tree PATH ...] [--streams 200] [--chunks 50]
        [--gap 0.1] [--rounds 6]

Each checkout (default: this one; give `--tree` several times, e.g. an older commit unpacked with
`git archive`, to compare) runs under gunicorn with one gevent worker, everything on as in
request_cpu.py (API keys, Redis limits, metrics, JSON access logs, tracing at 10 %), in front of the
fake OpenAI upstream streaming `--chunks` words `--gap` seconds apart. Each round sends `--streams`
streams at once (hey) to every checkout in turn, the order alternating between rounds, and half of
the rounds run with the gateways started in the reverse order (start_order.py). The figure is
user+system CPU of the gunicorn master and worker during a round, per stream: with many chunks per
stream it is mostly the relay of each chunk (read, parse, translate, frame, write), which a
non-streamed request or a fast stream does not show. Printed per round, then the median per
checkout with the lowest and highest, and the median of the per-round differences to the first.
Needs Postgres at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# The other benchmarks and the test harness, importable once the checkout is on sys.path (E402).
from benchmarks import request_cpu, start_order  # noqa: E402
from benchmarks.hey_load import ensure_hey, run_hey  # noqa: E402
from benchmarks.websocket_idle import raise_fd_limit  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402

BODY = json.dumps({"model": "gpt-test", "input": "Say something.", "stream": True}).encode()


def _cpu_per_stream(gateway: request_cpu.Gateway, args: argparse.Namespace) -> float:
    """One round's streams at once against one checkout: CPU ms of its master and worker per stream."""
    user, system = gateway.cpu_seconds()
    result = run_hey(f"{gateway.process.base_url}/responses", BODY, requests=args.streams,
                     concurrency=args.streams, headers={"Authorization": f"Bearer {gateway.key}"},
                     timeout=int(args.chunks * args.gap * 20) + 60)
    user_after, system_after = gateway.cpu_seconds()
    if result.errors:
        print(f"  {result.errors} errors", flush=True)
    return (user_after - user + system_after - system) / args.streams * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to run (repeatable)")
    parser.add_argument("--streams", type=int, default=200, help="streams at once per round and checkout")
    parser.add_argument("--chunks", type=int, default=50, help="words per stream, one chunk each")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between chunks")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    trees = args.tree or [ROOT]
    ensure_hey()
    raise_fd_limit(args.streams * 4 + 1000)
    upstream = FakeOpenAI()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(args.chunks)), chunk_delay=args.gap)
    collector = GrpcReceiver()
    figures: dict[Path, list[float]] = {tree: [] for tree in trees}
    try:
        for starts, rounds in start_order.halves(trees, args.rounds):
            with ExitStack() as stack:
                gateways = {tree: stack.enter_context(request_cpu.Gateway(
                    tree, request_cpu.config(upstream.url, collector.endpoint, f"gw:slow:{secrets.token_hex(4)}:"),
                    workers=1)) for tree in starts}
                for gateway in gateways.values():  # first-use costs, unmeasured
                    run_hey(f"{gateway.process.base_url}/responses", BODY, requests=40, concurrency=10,
                            headers={"Authorization": f"Bearer {gateway.key}"}, timeout=120)
                for round_ in rounds:
                    for tree in trees if round_ % 2 == 0 else trees[::-1]:
                        figures[tree].append(_cpu_per_stream(gateways[tree], args))
                        print(f"round {round_}, {tree}: {figures[tree][-1]:.2f} ms per stream", flush=True)
    finally:
        collector.close()
        upstream.close()
    first = figures[trees[0]]
    print(f"\n{args.streams} streams at once x {args.chunks} chunks {args.gap * 1000:.0f} ms apart, 1 worker, "
          f"{args.rounds} rounds\n")
    print("| checkout | CPU ms per stream, median | lowest | highest | change vs first, median of rounds |")
    print("|---|---:|---:|---:|---:|")
    for tree in trees:
        values = figures[tree]
        change = statistics.median(a - b for a, b in zip(values, first, strict=True))
        print(f"| {tree} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | {change:+.2f} |")


if __name__ == "__main__":
    main()
