"""What an open stream holds in a gateway worker: tracemalloc snapshots while streams are open.

    .venv/bin/python benchmarks/stream_memory.py [--streams 300] [--chunks 150] [--gap 0.2] [--at 24]
        [--settle 7] [--top 15] [--depth 1]

One gateway worker, everything on as in request_cpu.py (API keys, Redis limits, metrics, JSON
access logs, tracing at 10 %), under `benchmarks/stream_memory_gunicorn.conf.py`, which starts
tracemalloc in the worker. The fake OpenAI upstream streams `--chunks` words `--gap` seconds apart.
Snapshot A after a warm-up (as many short streams at once, so that pools and tables have grown to
what the run needs); then `--streams` streams at once (hey), snapshot B `--at` seconds later
(tracemalloc slows the worker several times over: give the streams time to pass their first byte),
and snapshot C once they have all ended and `--settle` seconds more have passed. Printed: what B
holds more than A, per stream, in all and by allocation site (the innermost `--depth` frames), and
what C holds more than A (a leak would show there). Python's allocations only: greenlet stacks are
among them (greenlet saves them with Python's allocator), the kernel's socket buffers are not.
Needs Postgres at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# The other benchmarks and the test harness, importable once the checkout is on sys.path (E402).
from benchmarks import request_cpu  # noqa: E402
from benchmarks.hey_load import ensure_hey, run_hey  # noqa: E402
from benchmarks.websocket_idle import raise_fd_limit  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402

BODY = json.dumps({"model": "gpt-test", "input": "Say something.", "stream": True}).encode()
HOOK = ["-c", "benchmarks/stream_memory_gunicorn.conf.py"]


def snapshot(directory: Path, name: str, timeout: float = 60) -> tracemalloc.Snapshot:
    """Ask the worker for a snapshot and wait for it."""
    (directory / f"{name}.want").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (directory / f"{name}.want").exists():
            (written,) = directory.glob(f"{name}.*.snapshot")
            return tracemalloc.Snapshot.load(str(written))
        time.sleep(0.2)
    raise RuntimeError(f"the worker wrote no snapshot {name!r} within {timeout} s")


def _short(filename: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "python3." else rest
    return filename


def by_site(later: tracemalloc.Snapshot, earlier: tracemalloc.Snapshot, *, depth: int) -> Counter[str]:
    """Bytes `later` holds more than `earlier`, by allocation site: the innermost `depth` frames."""
    sites: Counter[str] = Counter()
    for difference in later.compare_to(earlier, "traceback"):
        frames = list(difference.traceback)[::-1][:depth]  # innermost first
        sites[" <- ".join(f"{_short(frame.filename)}:{frame.lineno}" for frame in frames)] += difference.size_diff
    return sites


def report(title: str, sites: Counter[str], streams: int, top: int) -> str:
    lines = [f"{title}: {sum(sites.values()) / streams / 1024:.1f} KB per stream", ""]
    lines += [f"  {size / streams / 1024:7.2f} KB  {site}" for site, size in sites.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=150, help="words per stream, one chunk each")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between chunks")
    parser.add_argument("--at", type=float, default=24.0, help="seconds after the streams start: snapshot B")
    parser.add_argument("--settle", type=float, default=7.0,
                        help="seconds to wait before snapshots A and C (gunicorn's keep-alive is 5 s)")
    parser.add_argument("--top", type=int, default=15, help="allocation sites to print")
    parser.add_argument("--depth", type=int, default=1, help="frames per allocation site")
    args = parser.parse_args()
    ensure_hey()
    raise_fd_limit(args.streams * 4 + 1000)
    upstream = FakeOpenAI()
    collector = GrpcReceiver()
    try:
        with tempfile.TemporaryDirectory(prefix="stream-memory-") as tmp:
            directory = Path(tmp)
            gateway = request_cpu.Gateway(ROOT, request_cpu.config(upstream.url, collector.endpoint,
                                                                   f"bench:mem:{secrets.token_hex(4)}:"),
                                          workers=1, env={"STREAM_MEMORY_DIR": tmp}, args=HOOK)
            with gateway:
                url = f"{gateway.base_url}/responses"
                headers = {"Authorization": f"Bearer {gateway.key}"}
                # First-use costs, and every pool and table grown to what the streams will need (a
                # pool grown during the run is not a leak): as many streams at once, short ones.
                upstream.default_step = Reply(text="w0 w1", chunk_delay=args.gap)
                run_hey(url, BODY, requests=args.streams, concurrency=args.streams, headers=headers, timeout=300)
                time.sleep(args.settle)
                before = snapshot(directory, "a")
                upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(args.chunks)), chunk_delay=args.gap)
                timeout = int(args.chunks * args.gap * 20) + 120
                load = threading.Thread(target=run_hey, args=(url, BODY),
                                        kwargs={"requests": args.streams, "concurrency": args.streams,
                                                "headers": headers, "timeout": timeout})
                load.start()
                time.sleep(args.at)
                during = snapshot(directory, "b")
                load.join()
                time.sleep(args.settle)  # the clients' kept-alive connections closed, the last turns settled
                after = snapshot(directory, "c")
    finally:
        collector.close()
        upstream.close()
    print(f"{args.streams} streams at once, {args.chunks} chunks {args.gap * 1000:.0f} ms apart, one worker; "
          f"snapshot B {args.at:.0f} s after they started\n")
    print(report("held while the streams were open (B - A)", by_site(during, before, depth=args.depth), args.streams,
                 args.top))
    print()
    print(report("left after they ended (C - A)", by_site(after, before, depth=args.depth), args.streams, 5))


if __name__ == "__main__":
    main()
