"""How much latency metrics and tracing add, measured side by side in one run.

    .venv/bin/python benchmarks/observability_overhead.py [--requests 300] [--concurrency 10] [--rounds 2]

Each variant runs the real gateway under gunicorn (2 gevent workers, its own Postgres database)
in front of a fake OpenAI upstream that answers after a fixed 50 ms, like a fast real model. Spans
go to an OTLP/gRPC receiver on loopback, as they would to a collector. Variants are interleaved
over `--rounds` so that drift on a shared machine spreads over all of them. Results are printed as
a Markdown table (benchmarks/RESULTS.md holds the last run). Needs Postgres at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# The test harness, importable once the checkout is on sys.path (E402).
from benchmarks.request_cpu import fake_upstream  # noqa: E402
from tests.e2e.gunicorn import GatewayProcess  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI  # noqa: E402
from tests.observability.e2e_config import gateway_yaml  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402

UPSTREAM_LATENCY = 0.050


def variants(collector: str) -> dict[str, dict]:
    def tracing(rate: float) -> dict:
        return {"enabled": True, "sampler": {"type": "probability", "rate": rate},
                "exporter": {"type": "otlp", "endpoint": collector, "protocol": "grpc", "insecure": True}}

    return {
        "observability off": {"metrics": False, "tracing": None},
        "metrics on": {"metrics": True, "tracing": None},
        "tracing 10%": {"metrics": False, "tracing": tracing(0.1)},
        "tracing 100%": {"metrics": False, "tracing": tracing(1.0)},
        "metrics + tracing 10%": {"metrics": True, "tracing": tracing(0.1)},
    }


def worker_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time of gunicorn's workers (children of the master), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:  # ppid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def run_variant(upstream: FakeOpenAI, spec: dict, requests_: int, concurrency: int) -> tuple[list[float], float]:
    config = gateway_yaml(upstream.url, metrics=spec["metrics"], tracing=spec["tracing"], log_level="warn")
    if not spec["metrics"] and spec["tracing"] is None:
        config = config.replace('"enabled": true, "metrics"', '"enabled": false, "metrics"')
    body = {"model": "gpt-test", "input": "Say something short."}
    with GatewayProcess(config, workers=2) as gw:
        if gw.proc is None:
            raise RuntimeError("the gateway did not start")
        master_pid = gw.proc.pid
        url = f"{gw.base_url}/responses"
        sessions = [requests.Session() for _ in range(concurrency)]

        def one(index: int) -> float:
            started = time.perf_counter()
            response = sessions[index % concurrency].post(url, json=body, timeout=30)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
            return elapsed

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(concurrency * 3)))  # warm-up: connections, pools, code paths
            cpu_before = worker_cpu_seconds(master_pid)
            latencies = list(pool.map(one, range(requests_)))
            cpu = worker_cpu_seconds(master_pid) - cpu_before
        for session in sessions:
            session.close()
    return latencies, cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per variant per round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    upstream = fake_upstream(UPSTREAM_LATENCY)
    collector = GrpcReceiver()
    results: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    started = time.time()
    try:
        specs = variants(collector.endpoint)
        for round_ in range(args.rounds):
            for name, spec in specs.items():
                latencies, seconds = run_variant(upstream, spec, args.requests, args.concurrency)
                results.setdefault(name, []).extend(latencies)
                cpu[name] = cpu.get(name, 0.0) + seconds
                print(f"round {round_ + 1}: {name} done", file=sys.stderr)
    finally:
        upstream.close()
        collector.close()

    base = results["observability off"]
    base_mean, base_p50 = statistics.mean(base), percentile(base, 0.5)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}: {args.rounds} rounds x {args.requests} "
        f"requests per variant, concurrency {args.concurrency}, upstream latency {UPSTREAM_LATENCY * 1000:.0f} ms, "
        f"{len(collector.spans)} spans received by the OTLP receiver.",
        "",
        "| variant | requests | mean ms | p50 ms | p95 ms | p99 ms | mean vs off | p50 vs off "
        "| worker CPU ms/request | CPU vs off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in results.items():
        mean, p50 = statistics.mean(values), percentile(values, 0.5)
        lines.append(
            f"| {name} | {len(values)} | {mean * 1000:.1f} | {p50 * 1000:.1f} | {percentile(values, 0.95) * 1000:.1f} "
            f"| {percentile(values, 0.99) * 1000:.1f} | {(mean / base_mean - 1) * 100:+.1f} % "
            f"| {(p50 / base_p50 - 1) * 100:+.1f} % | {cpu[name] / len(values) * 1000:.2f} "
            f"| {(cpu[name] / cpu['observability off'] - 1) * 100:+.1f} % |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
