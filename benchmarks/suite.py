"""The benchmark suite: one command, one gateway with everything on, figures per scenario.

    .venv/bin/python benchmarks/suite.py [--quick] [--scenarios json,sse,...] [--rounds N] [--markdown PATH]

The gateway runs under gunicorn (2 gevent workers) on a fresh Postgres database with API-key auth,
Redis rate limits (high enough never to refuse), storage, Prometheus metrics, JSON access logs at
info and tracing at 10 % to an OTLP/gRPC receiver on loopback. Its upstream is Debian's nginx
answering OpenAI-shaped bodies from files (benchmarks/nginx_upstream.py), which costs almost
nothing, or, where an answer must take time, the Python fakes of tests/fakes. Load comes from `hey`
(benchmarks/hey_load.py; installed with apt-get when missing), sent to the gateway and, in the same
round, straight to the upstream: the difference is what the gateway adds. Rounds interleave the
targets and the load points, and every figure is the median over rounds with the min-max spread.

Scenarios (all by default):

- json, sse: `POST /v1/responses` non-streamed / streamed at concurrency 1, 10 and 50 (Chat
  Completions upstream).
- long: the same at concurrency 1 and 10 with answers of ordinary length: a 100-word input and a
  300-word answer (a chunk per word when streamed), so what grows with a turn's size (its JSON,
  its stored items) shows.
- responses-api: the same at concurrency 10 against an `api: responses` upstream.
- delayed: non-streamed and streamed at concurrency 10 against a fake that answers after 50 ms and
  streams a chunk every 10 ms.
- chain: chains of turns linked by `previous_response_id`, one request at a time: turn 2 against
  the last turn.
- tool-loop: the 20-turn tool loop over HTTP and over one WebSocket (benchmarks/websocket_tool_loop.py).
- slow-streams: many concurrent streams of a chunk every 100 ms (1,000 for 10 s in the full run):
  all must complete; peak RSS (summed, and PSS) and Postgres connections.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test harness and the other benchmarks, importable once the checkout is on sys.path (E402).
from benchmarks import english  # noqa: E402
from benchmarks import websocket_tool_loop as tool_loop  # noqa: E402
from benchmarks.hey_load import HeyResult, ensure_hey, run_hey  # noqa: E402
from benchmarks.litellm_proxy import VENV, LiteLLMProxy  # noqa: E402
from benchmarks.litellm_proxy import VERSION as LITELLM_VERSION  # noqa: E402
from benchmarks.nginx_upstream import TEXT, NginxUpstream  # noqa: E402
from benchmarks.process_tree import PeakRss, tree_rss  # noqa: E402
from benchmarks.websocket_idle import PostgresSampler, auth_headers, create_key, raise_fd_limit  # noqa: E402
from tests.e2e.gunicorn import GatewayProcess  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.observability.otlp_receiver import GrpcReceiver  # noqa: E402

SCENARIOS = ("json", "sse", "long", "surfaces", "responses-api", "delayed", "chain", "tool-loop", "slow-streams")
WORKERS = 2
PROMPT = "Say something short."
LONG_PROMPT = english.text(100, seed=7)
MB = 1024 * 1024
MARKERS = ("<!-- suite:begin -->", "<!-- suite:end -->")


@dataclass(frozen=True)
class Plan:
    """How much of everything: `--quick` is a smoke run of about 2 minutes, the full run under 10."""

    rounds: int
    requests: dict[int, int]  # concurrency -> requests per target per round
    side_requests: int  # responses-api and delayed, at concurrency 10
    chains: int
    chain_turns: int
    tool_loops: int  # per variant per round
    tool_rounds: int
    slow_streams: int
    slow_seconds: int


QUICK = Plan(rounds=2, requests={1: 100, 10: 300, 50: 500}, side_requests=200, chains=3, chain_turns=10,
             tool_loops=2, tool_rounds=1, slow_streams=200, slow_seconds=5)
FULL = Plan(rounds=3, requests={1: 300, 10: 1000, 50: 2000}, side_requests=400, chains=32, chain_turns=50,
            tool_loops=4, tool_rounds=3, slow_streams=1000, slow_seconds=10)


# --- the upstreams and the gateway ------------------------------------------------------------------

class Upstreams:
    """nginx for the cheap answers, Python fakes for answers that take time and for the tool loop."""

    def __init__(self, plan: Plan) -> None:
        self.nginx = NginxUpstream()
        self.delayed = FakeOpenAI()
        # Ten words: the first byte after 50 ms, then a chunk every 10 ms.
        self.delayed.default_step = Reply(text=TEXT, first_byte_delay=0.05, chunk_delay=0.01)
        self.slow = FakeOpenAI()
        chunks = plan.slow_seconds * 10
        self.slow.default_step = Reply(text=" ".join(f"w{i}" for i in range(chunks)), chunk_delay=0.1)
        self.tools = tool_loop.ToolLoopUpstream(turns=20)
        self.nginx.start()

    def close(self) -> None:
        self.nginx.stop()
        for fake in (self.delayed, self.slow, self.tools):
            fake.close()


def gateway_config(upstreams: Upstreams, collector: str) -> str:
    nginx = upstreams.nginx.url

    def provider(endpoint: str, api: str = "chat") -> dict[str, Any]:
        return {"type": "openai", "api_key": "bench", "endpoint": endpoint, "api": api, "read_timeout": 60}

    providers = {
        "nginx-json": provider(f"{nginx}/json/v1"),
        "nginx-sse": provider(f"{nginx}/sse/v1"),
        "nginx-long-json": provider(f"{nginx}/json/long/v1"),
        "nginx-long-sse": provider(f"{nginx}/sse/long/v1"),
        "nginx-responses-json": provider(f"{nginx}/json/v1", "responses"),
        "nginx-responses-sse": provider(f"{nginx}/sse/v1", "responses"),
        "delayed": provider(f"{upstreams.delayed.url}/v1"),
        "slow": provider(f"{upstreams.slow.url}/v1"),
        "tools": provider(f"{upstreams.tools.url}/v1"),
    }
    models = [{"name": f"bench-{name}", "provider": name, "provider_model_id": "gpt-4o-mini"} for name in providers]
    # websocket_tool_loop's loops ask for its model name.
    models.append({"name": tool_loop.MODEL, "provider": "tools", "provider_model_id": "gpt-4o-mini"})
    config = {
        "logging": {"format": "json", "level": "info"},  # an access log line per request
        "auth": {"enabled": True},
        # Both buckets charged in Redis on every request, never refusing one.
        "rate_limit": {"enabled": True, "requests_per_minute": 100_000_000, "tokens_per_minute": 10_000_000_000,
                       "redis_key_prefix": f"gw:bench:{secrets.token_hex(4)}:"},
        "observability": {
            "enabled": True,
            "metrics": {"enabled": True, "path": "/metrics"},
            "tracing": {"enabled": True, "sampler": {"type": "probability", "rate": 0.1},
                        "exporter": {"type": "otlp", "endpoint": collector, "protocol": "grpc", "insecure": True}},
        },
        "providers": providers,
        "models": models,
    }
    return json.dumps(config)  # JSON is YAML


# --- load points: the gateway and the upstream, side by side ------------------------------------------

@dataclass(frozen=True)
class LoadPoint:
    scenario: str
    label: str
    concurrency: int
    requests: int
    gateway_body: dict[str, Any]
    direct_url: str  # the upstream the gateway calls for this point
    direct_body: dict[str, Any]
    litellm_body: dict[str, Any] | None = None  # the same request to LiteLLM's proxy, where it has the model
    gateway_path: str = "responses"  # under the gateway's /v1: which API surface the point loads


def chat_request(stream: bool) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}


def load_points(scenarios: Sequence[str], plan: Plan, upstreams: Upstreams) -> list[LoadPoint]:
    nginx = upstreams.nginx.url
    points = []
    for stream in (False, True):
        scenario = "sse" if stream else "json"
        if scenario in scenarios:
            prefix = "sse" if stream else "json"
            points += [LoadPoint(scenario, "streamed" if stream else "non-streamed", c, n,
                                 {"model": f"bench-nginx-{prefix}", "input": PROMPT, "stream": stream},
                                 f"{nginx}/{prefix}/v1/chat/completions", chat_request(stream),
                                 {"model": f"bench-{prefix}", "input": PROMPT, "stream": stream})
                       for c, n in plan.requests.items()]
    if "long" in scenarios:
        for stream in (False, True):
            prefix = "sse" if stream else "json"
            points += [LoadPoint("long", f"{'streamed' if stream else 'non-streamed'}, 100 + 300 words", c, n,
                                 {"model": f"bench-nginx-long-{prefix}", "input": LONG_PROMPT, "stream": stream},
                                 f"{nginx}/{prefix}/long/v1/chat/completions",
                                 {**chat_request(stream), "messages": [{"role": "user", "content": LONG_PROMPT}]})
                       for c, n in plan.requests.items() if c <= 10]
    if "surfaces" in scenarios:
        # The same upstream answer through each API surface, side by side in the same rounds: what
        # each surface's own parsing and rendering adds (issue 14).
        for stream in (False, True):
            prefix = "sse" if stream else "json"
            model, how = f"bench-nginx-{prefix}", "streamed" if stream else "non-streamed"
            direct = (f"{nginx}/{prefix}/v1/chat/completions", chat_request(stream))
            # Chat Completions and Messages store nothing by default; /v1/responses stores every turn
            # unless told not to, so it is loaded both ways.
            points += [
                LoadPoint("surfaces", f"{how}, /v1/responses", 10, plan.side_requests,
                          {"model": model, "input": PROMPT, "stream": stream}, *direct),
                LoadPoint("surfaces", f"{how}, /v1/responses store: false", 10, plan.side_requests,
                          {"model": model, "input": PROMPT, "stream": stream, "store": False}, *direct),
                LoadPoint("surfaces", f"{how}, /v1/chat/completions", 10, plan.side_requests,
                          {**chat_request(stream), "model": model}, *direct, gateway_path="chat/completions"),
                LoadPoint("surfaces", f"{how}, /v1/messages", 10, plan.side_requests,
                          {"model": model, "max_tokens": 256, "stream": stream,
                           "messages": [{"role": "user", "content": PROMPT}]}, *direct, gateway_path="messages"),
            ]
    if "responses-api" in scenarios:
        for stream in (False, True):
            prefix = "sse" if stream else "json"
            points.append(LoadPoint("responses-api", f"{'streamed' if stream else 'non-streamed'}, Responses upstream",
                                    10, plan.side_requests,
                                    {"model": f"bench-nginx-responses-{prefix}", "input": PROMPT, "stream": stream},
                                    f"{nginx}/{prefix}/v1/responses",
                                    {"model": "gpt-4o-mini", "input": PROMPT, "stream": stream}))
    if "delayed" in scenarios:
        for stream in (False, True):
            points.append(LoadPoint("delayed", f"{'streamed' if stream else 'non-streamed'}, 50 ms + 10 ms/chunk",
                                    10, plan.side_requests,
                                    {"model": "bench-delayed", "input": PROMPT, "stream": stream},
                                    f"{upstreams.delayed.url}/v1/chat/completions", chat_request(stream)))
    return points


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Figures:
    """One hey run, in milliseconds where a time."""

    p50: float
    p95: float
    p99: float
    ttfb_p50: float
    per_second: float
    errors: int
    failures: str  # e.g. "503: 2, no answer: 1"
    cpu_ms: float | None = None  # gateway process tree, per request
    rss_mb: float | None = None  # gateway process tree, peak

    @classmethod
    def of(cls, result: HeyResult, cpu_seconds: float | None = None, rss: int | None = None) -> Figures:
        latencies = result.latencies()
        return cls(p50=percentile(latencies, 0.5) * 1000, p95=percentile(latencies, 0.95) * 1000,
                   p99=percentile(latencies, 0.99) * 1000, ttfb_p50=percentile(result.first_bytes(), 0.5) * 1000,
                   per_second=result.per_second, errors=result.errors,
                   failures=", ".join(f"{kind}: {count}" for kind, count in sorted(result.failures().items())),
                   cpu_ms=None if cpu_seconds is None else cpu_seconds / max(1, result.answered) * 1000,
                   rss_mb=None if rss is None else rss / MB)


@dataclass
class PointResults:
    gateway: list[Figures] = field(default_factory=list)
    direct: list[Figures] = field(default_factory=list)
    litellm: list[Figures] = field(default_factory=list)


class Gateway:
    """The gateway under test, with what the suite needs to load and observe it."""

    def __init__(self, process: GatewayProcess, key: str) -> None:
        self.process = process
        self.key = key
        assert process.proc is not None  # noqa: S101 - entered
        self.pid = process.proc.pid
        self.url = f"{process.base_url}/responses"
        self.headers = auth_headers(key)

    def url_of(self, point: LoadPoint) -> str:
        return f"{self.process.base_url}/{point.gateway_path}"

    def cpu(self) -> float:
        return tool_loop.gateway_cpu_seconds(self.pid)


def run_gateway(gw: Gateway, point: LoadPoint) -> Figures:
    cpu_before = gw.cpu()
    with PeakRss(gw.pid) as peak:
        result = run_hey(gw.url_of(point), json.dumps(point.gateway_body).encode(), requests=point.requests,
                         concurrency=point.concurrency, headers=gw.headers)
    return Figures.of(result, gw.cpu() - cpu_before, peak.bytes)


def run_litellm(proxy: LiteLLMProxy, point: LoadPoint) -> Figures:
    assert proxy.proc is not None and point.litellm_body is not None  # noqa: S101 - started, and asked for
    cpu_before = tool_loop.gateway_cpu_seconds(proxy.proc.pid)
    with PeakRss(proxy.proc.pid) as peak:
        result = run_hey(f"{proxy.base_url}/responses", json.dumps(point.litellm_body).encode(),
                         requests=point.requests, concurrency=point.concurrency, headers=proxy.headers)
    return Figures.of(result, tool_loop.gateway_cpu_seconds(proxy.proc.pid) - cpu_before, peak.bytes)


def run_direct(point: LoadPoint) -> Figures:
    return Figures.of(run_hey(point.direct_url, json.dumps(point.direct_body).encode(), requests=point.requests,
                              concurrency=point.concurrency))


def run_rounds(gw: Gateway, points: list[LoadPoint], rounds: int, proxy: LiteLLMProxy | None) -> list[PointResults]:
    results = [PointResults() for _ in points]
    for round_ in range(rounds):
        # Rotate the points and the order of the targets, so drift is shared by all.
        shift = round_ % len(points)
        for index in [*range(shift, len(points)), *range(shift)]:
            point, into = points[index], results[index]
            targets = ["gateway", "direct"] + (["litellm"] if proxy and point.litellm_body else [])
            turn = round_ % len(targets)
            for target in targets[turn:] + targets[:turn]:
                if target == "gateway":
                    into.gateway.append(run_gateway(gw, point))
                elif target == "direct":
                    into.direct.append(run_direct(point))
                elif proxy is not None:
                    into.litellm.append(run_litellm(proxy, point))
        print(f"load round {round_ + 1}/{rounds} done", file=sys.stderr)
    return results


def warm_up(gw: Gateway, points: list[LoadPoint]) -> None:
    """First-use costs (imports, pools, connections in both workers) before anything is measured."""
    for point in points:
        run_hey(gw.url_of(point), json.dumps(point.gateway_body).encode(), requests=40, concurrency=10,
                headers=gw.headers)


# --- chain, tool loop, slow streams -------------------------------------------------------------------

def run_chains(gw: Gateway, plan: Plan) -> list[list[float]]:
    """Seconds per turn of each chain, non-streamed, stored, one request at a time."""
    chains = []
    with requests.Session() as session:
        for _ in range(plan.chains):
            previous: str | None = None
            turns = []
            for turn in range(1, plan.chain_turns + 1):
                body: dict[str, Any] = {"model": "bench-nginx-json", "input": f"Turn {turn}: go on."}
                if previous:
                    body["previous_response_id"] = previous
                started = time.perf_counter()
                response = session.post(gw.url, json=body, headers=gw.headers, timeout=60)
                turns.append(time.perf_counter() - started)
                response.raise_for_status()
                previous = response.json()["id"]
            chains.append(turns)
    return chains


def run_tool_loop(gw: Gateway, plan: Plan) -> dict[str, tool_loop.Totals]:
    """websocket_tool_loop's variants and blocks, against this gateway (auth on, everything on)."""
    args = argparse.Namespace(turns=20, loops=plan.tool_loops, concurrency=2)
    client = OpenAI(base_url=gw.process.base_url, api_key=gw.key, max_retries=0, timeout=60)
    pg = tool_loop.Postgres(gw.process.db_name)
    results = {name: tool_loop.Totals() for name in tool_loop.VARIANTS}
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:  # warm-up
            for name in tool_loop.VARIANTS:
                list(pool.map(tool_loop.runner(name, client, args.turns), range(args.concurrency)))
        index = args.concurrency
        for round_ in range(plan.tool_rounds):
            shift = round_ % len(tool_loop.VARIANTS)
            for name in tool_loop.VARIANTS[shift:] + tool_loop.VARIANTS[:shift]:
                tool_loop.run_block(name, client, gw.pid, pg, args, index, results[name])
                index += args.loops
    finally:
        client.close()
        pg.close()
    return results


@dataclass(frozen=True)
class SlowStreams:
    streams: int
    figures: Figures
    completed: int  # stored with status completed
    postgres_peak: int
    pss_mb: float  # peak proportional set size of the process tree (process_tree.tree_pss)


def run_slow_streams(gw: Gateway, plan: Plan) -> SlowStreams:
    raise_fd_limit(plan.slow_streams * 4 + 1000)
    sampler = PostgresSampler(gw.process.db_name)
    sampler.start()
    body = {"model": "bench-slow", "input": PROMPT, "stream": True}
    cpu_before = gw.cpu()
    try:
        with PeakRss(gw.pid, pss=True) as peak:
            result = run_hey(gw.url, json.dumps(body).encode(), requests=plan.slow_streams,
                             concurrency=plan.slow_streams, headers=gw.headers, timeout=plan.slow_seconds * 6)
    finally:
        sampler.stop()
    pg = tool_loop.Postgres(gw.process.db_name)
    try:
        row = pg.conn.execute("SELECT count(*) FROM conversations_app_storedresponse "
                              "WHERE model = 'bench-slow' AND status = 'completed'").fetchone()
    finally:
        pg.close()
    return SlowStreams(plan.slow_streams, Figures.of(result, gw.cpu() - cpu_before, peak.bytes),
                       int(row[0]) if row else 0, sampler.peak, peak.pss_bytes / MB)


# --- the report -----------------------------------------------------------------------------------------

def spread(values: Sequence[float | None], digits: int = 1) -> str:
    """median (min-max) over rounds."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    median = statistics.median(present)
    if len(present) == 1 or min(present) == max(present):
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(present):.{digits}f}-{max(present):.{digits}f})"


def table_head(*columns: str) -> list[str]:
    """A Markdown table's header: the first column left-aligned (names), the others right (figures)."""
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]


def load_table(points: list[LoadPoint], results: list[PointResults]) -> list[str]:
    lines = table_head("scenario", "c", "requests x rounds", "p50 ms", "p95 ms", "p99 ms", "TTFB p50 ms", "req/s",
                       "gateway CPU ms/req", "peak RSS MB", "errors", "added p50 ms", "added p99 ms", "direct p50 ms",
                       "direct p99 ms", "direct req/s")
    for point, result in zip(points, results, strict=True):
        gw, direct = result.gateway, result.direct
        # Added latency per round: gateway minus the upstream alone, measured side by side.
        added50 = [g.p50 - d.p50 for g, d in zip(gw, direct, strict=True)]
        added99 = [g.p99 - d.p99 for g, d in zip(gw, direct, strict=True)]
        lines.append(
            f"| {point.label} | {point.concurrency} | {point.requests} x {len(gw)} | {spread([f.p50 for f in gw])} "
            f"| {spread([f.p95 for f in gw])} | {spread([f.p99 for f in gw])} | {spread([f.ttfb_p50 for f in gw])} "
            f"| {spread([f.per_second for f in gw], 0)} | {spread([f.cpu_ms for f in gw], 2)} "
            f"| {spread([f.rss_mb for f in gw], 0)} | {sum(f.errors for f in gw)} "
            f"| {spread(added50)} | {spread(added99)} | {spread([f.p50 for f in direct], 2)} "
            f"| {spread([f.p99 for f in direct], 2)} | {spread([f.per_second for f in direct], 0)} |")
    return lines


def litellm_table(points: list[LoadPoint], results: list[PointResults]) -> list[str]:
    lines = table_head("scenario", "c", "LiteLLM p50 ms", "LiteLLM p99 ms", "LiteLLM req/s", "LiteLLM CPU ms/req",
                       "LiteLLM peak RSS MB", "LiteLLM errors", "gateway/LiteLLM p50", "gateway/LiteLLM req/s",
                       "gateway/LiteLLM CPU")
    for point, result in zip(points, results, strict=True):
        ll, gw = result.litellm, result.gateway
        if not ll:
            continue
        # Ratios per round (same round, same machine state), then their median and spread.
        pairs = list(zip(gw, ll, strict=True))
        lines.append(
            f"| {point.label} | {point.concurrency} | {spread([f.p50 for f in ll])} | {spread([f.p99 for f in ll])} "
            f"| {spread([f.per_second for f in ll], 0)} | {spread([f.cpu_ms for f in ll], 2)} "
            f"| {spread([f.rss_mb for f in ll], 0)} | {sum(f.errors for f in ll)} "
            f"| {spread([g.p50 / max(x.p50, 1e-9) for g, x in pairs], 2)} "
            f"| {spread([g.per_second / max(x.per_second, 1e-9) for g, x in pairs], 2)} "
            f"| {spread([(g.cpu_ms or 0) / max(x.cpu_ms or 0, 1e-9) for g, x in pairs], 2)} |")
    return lines


def chain_lines(chains: list[list[float]]) -> list[str]:
    turns = len(chains[0])
    shown = sorted({1, 2, min(10, turns), turns})
    lines = [*table_head("turn", *(str(t) for t in shown)),
             "| p50 ms (min-max over chains) | "
             + " | ".join(spread([chain[t - 1] * 1000 for chain in chains]) for t in shown) + " |"]
    second = statistics.median(chain[1] for chain in chains)
    last = statistics.median(chain[-1] for chain in chains)
    lines += ["", f"Turn {turns} against turn 2: {last / second:.2f}x ({(last / second - 1) * 100:+.0f} %), "
                  f"{len(chains)} chains of {turns} turns."]
    return lines


def slow_lines(slow: SlowStreams, plan: Plan) -> list[str]:
    f = slow.figures
    return [f"{slow.streams} concurrent streams, a chunk every 100 ms for {plan.slow_seconds} s: "
            f"{slow.streams - f.errors} answered 2xx ({f.failures or 'no failures'}), {slow.completed} stored as "
            f"completed; stream time p50 "
            f"{f.p50 / 1000:.2f} s, p99 {f.p99 / 1000:.2f} s, TTFB p50 {f.ttfb_p50:.0f} ms; peak gateway RSS "
            f"{f.rss_mb:.0f} MB summed over master + {WORKERS} workers ({slow.pss_mb:.0f} MB by PSS, which counts the "
            f"pages they share once); peak Postgres connections {slow.postgres_peak}; "
            f"gateway CPU {f.cpu_ms:.1f} ms per stream."]


def commit() -> str:
    def git(*args: str) -> str:
        git_ = shutil.which("git") or "git"
        done = subprocess.run([git_, *args], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain") else "")


def write_markdown(path: Path, text: str) -> None:
    """Replace the section between the suite's markers when `path` has them, else write the file."""
    block = f"{MARKERS[0]}\n{text}\n{MARKERS[1]}"
    if path.exists() and MARKERS[0] in (old := path.read_text()):
        pattern = re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1])
        path.write_text(re.sub(pattern, lambda _: block, old, count=1, flags=re.S))
    else:
        path.write_text(block + "\n")


# --- the run -----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, help="rounds of the load scenarios (quick 2, full 3)")
    parser.add_argument("--markdown", type=Path, help="write the results there (between the suite's markers if "
                                                      "the file has them, as benchmarks/RESULTS.md does)")
    parser.add_argument("--litellm", action="store_true",
                        help=f"also load LiteLLM's proxy ({VENV.relative_to(ROOT)}, installed when missing) on the "
                             "json and sse points, as a third target")
    parser.add_argument("--log", type=Path, help="keep the gateway's log (JSON lines) there")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**plan.__dict__, "rounds": args.rounds})
    ensure_hey()
    raise_fd_limit(8192)

    started = time.time()
    load_before = os.getloadavg()[0]
    command = "benchmarks/suite.py " + " ".join(sys.argv[1:])
    upstreams = Upstreams(plan)
    collector = GrpcReceiver()
    sections: list[str] = []
    proxy = None
    try:
        if args.litellm:
            # Started first: its import takes long, and nothing is measured yet.
            proxy = LiteLLMProxy(upstreams.nginx.url).start()
        with GatewayProcess(gateway_config(upstreams, collector.endpoint), workers=WORKERS,
                            env={"REDIS_URL": "redis://127.0.0.1:6379/0"}) as process:
            gw = Gateway(process, create_key(process))
            points = load_points(scenarios, plan, upstreams)
            if points:
                warm_up(gw, points)
                rss_before = tree_rss(gw.pid)
                results = run_rounds(gw, points, plan.rounds, proxy)
                # Whether the workers' memory settles or grows with the requests served.
                served = sum(point.requests for point in points) * plan.rounds
                sections += ["### Load (hey)", "", *load_table(points, results), "",
                             f"Gateway RSS (master + {WORKERS} workers) {rss_before / MB:.0f} MB after the warm-up, "
                             f"{tree_rss(gw.pid) / MB:.0f} MB after the load rounds ({served} requests).", ""]
                if proxy is not None:
                    sections += [f"### LiteLLM proxy {LITELLM_VERSION}, same load, same upstream, same rounds", "",
                                 "2 uvicorn workers, master key, no database (benchmarks/litellm_proxy.py); "
                                 "`POST /v1/responses`.", "", *litellm_table(points, results), ""]
            if "chain" in scenarios:
                sections += ["### Chain (`previous_response_id`, non-streamed, one request at a time)", "",
                             *chain_lines(run_chains(gw, plan)), ""]
                print("chains done", file=sys.stderr)
            if "tool-loop" in scenarios:
                totals = run_tool_loop(gw, plan)
                if upstreams.tools.mismatches:
                    raise SystemExit(f"tool loop: the upstream got a wrong history: {upstreams.tools.mismatches[0]}")
                sections += ["### 20-turn tool loop, HTTP against WebSocket (benchmarks/websocket_tool_loop.py)", "",
                             f"{plan.tool_rounds} rounds x {plan.tool_loops} loops per variant, 2 at a time, "
                             f"upstream first byte after {tool_loop.UPSTREAM_LATENCY * 1000:.0f} ms.", "",
                             *tool_loop.table(totals, 20), ""]
                print("tool loop done", file=sys.stderr)
            if "slow-streams" in scenarios:
                sections += ["### Slow streams", "", *slow_lines(run_slow_streams(gw, plan), plan), ""]
                print("slow streams done", file=sys.stderr)
            if args.log:
                args.log.write_text(process.log())
    finally:
        if proxy is not None:
            proxy.stop()
        collector.close()
        upstreams.close()

    header = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} on commit {commit()}, "
        f"{os.cpu_count()} CPUs (1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after), "
        f"{time.time() - started:.0f} s: `.venv/bin/python {command.strip()}`. "
        f"Medians over {plan.rounds} rounds with (min-max); {len(collector.spans)} spans reached the OTLP receiver.",
        "",
    ]
    text = "\n".join(header + sections).rstrip()
    print(text)
    if args.markdown:
        write_markdown(args.markdown, text)


if __name__ == "__main__":
    main()
