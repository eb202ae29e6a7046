"""A 20-turn tool loop over one WebSocket against the same loop over HTTP, side by side in one run.

    .venv/bin/python benchmarks/websocket_tool_loop.py [--turns 20] [--loops 10] [--rounds 5] [--concurrency 2]

One gateway under gunicorn (2 gevent workers, metrics on, its own Postgres database) in front of a
fake OpenAI upstream (Chat Completions) that answers every call after a fixed 20 ms: with a
function call on every turn but the last, and with a short text on the last. Each turn sends only
its new input (the `function_call_output` for the previous turn's call) and the tools, with the
openai SDK:

- `HTTP SSE, store:true`: `client.responses.create(stream=True, previous_response_id=...)`, the
  gateway loading the chain from Postgres on every turn;
- `WS, store:true`: the same turns as `response.create` events over one `client.responses.connect()`,
  each continued from the connection's memory (no chain read back) and stored as over HTTP;
- `WS, store:false`: the same, continued from the connection's memory (no Postgres at all).

A loop's time runs from its first request (for WebSocket: from opening the connection) to its
last turn's `response.completed`. The upstream checks every call: the n-th turn must carry the
n-1 earlier calls and their outputs, so each variant is proved to give the model the whole context.
Variants are interleaved over `--rounds` (each round runs `--loops` loops of every variant,
`--concurrency` at a time), so drift on a shared machine spreads over all of them; the gateway's
CPU (gunicorn master and workers, user + system) and that of the Postgres backends serving its
database are read before and after each variant's block. Needs Postgres at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil
import psycopg
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test harness, importable once the checkout is on sys.path (E402).
from benchmarks.process_tree import tree_cpu_times  # noqa: E402
from tests.e2e.gunicorn import GatewayProcess  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.server import Recorded, Writer  # noqa: E402
from tests.observability.e2e_config import gateway_yaml  # noqa: E402

MODEL = "gpt-test"
UPSTREAM_LATENCY = 0.020
TOOLS: list[Any] = [{"type": "function", "name": "lookup", "description": "Look a step up.",
                     "parameters": {"type": "object", "properties": {"step": {"type": "integer"}},
                                    "required": ["step"]}}]
VARIANTS = ("HTTP SSE, store:true", "WS, store:true", "WS, store:false")
BASELINE = VARIANTS[0]


def final_text(turns: int) -> str:
    return f"Done after {turns - 1} tool calls."


class ToolLoopUpstream(FakeOpenAI):
    """Answers a call carrying n tool results with call n+1, or with the final text once n = turns-1;
    a call whose history is not exactly the loop's so far is counted as a mismatch (and answered
    with a text, which ends the client's loop with an error)."""

    def __init__(self, turns: int) -> None:
        super().__init__()
        self.turns = turns
        self.calls = 0
        self.mismatches: list[str] = []

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        messages = (recorded.json or {}).get("messages") or []
        results = [m.get("tool_call_id") for m in messages if m.get("role") == "tool"]
        called = [c["id"] for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
        done = len(results)
        expected = [f"call_{n}" for n in range(1, done + 1)]
        with self._lock:
            self.calls += 1
            if results != expected or called != expected:
                self.mismatches.append(f"tool results {results}, calls {called}")
                done = self.turns - 1
        if done < self.turns - 1:
            call = {"id": f"call_{done + 1}", "name": "lookup", "arguments": json.dumps({"step": done + 1})}
            reply = Reply(text="", tool_calls=[call], first_byte_delay=UPSTREAM_LATENCY)
        else:
            reply = Reply(text=final_text(self.turns), first_byte_delay=UPSTREAM_LATENCY)
        try:
            super().handle(recorded, reply, writer)
        finally:
            recorded.body = b""  # the recorded requests are never read again: keep the fake's memory flat


@dataclass
class Loop:
    total: float = 0.0
    turns: list[float] = field(default_factory=list)  # seconds from send to response.completed


def next_input(response: dict[str, Any], turn: int, turns: int) -> list[Any] | None:
    """The function_call_output answering the response's call; None after the last turn."""
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    if turn == turns:
        text = "".join(part.get("text", "") for item in response["output"] if item["type"] == "message"
                       for part in item["content"])
        if calls or text != final_text(turns):
            raise RuntimeError(f"turn {turn}: expected the final answer, got {response['output']}")
        return None
    if len(calls) != 1 or calls[0]["call_id"] != f"call_{turn}":
        raise RuntimeError(f"turn {turn}: expected call_{turn}, got {response['output']}")
    return [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": f"result {turn}"}]


def first_input(index: int) -> str:
    return f"Loop {index}: call lookup until you are done."


def read_turn(events: Iterable[Any], turn: int) -> dict[str, Any]:
    """The completed response of one turn, from its events (SSE or WebSocket)."""
    for event in events:
        if event.type == "response.completed":
            return cast("dict[str, Any]", event.response.model_dump())
        if event.type in ("response.failed", "response.incomplete", "error"):
            raise RuntimeError(f"turn {turn}: {event.to_json()}")
    raise RuntimeError(f"turn {turn}: the events ended without response.completed")


def http_loop(client: OpenAI, index: int, turns: int) -> Loop:
    loop = Loop()
    started = time.perf_counter()
    input_: Any = first_input(index)
    previous: str | None = None
    for turn in range(1, turns + 1):
        sent = time.perf_counter()
        with client.responses.create(model=MODEL, input=input_, tools=TOOLS, previous_response_id=previous,
                                     store=True, stream=True) as stream:
            response = read_turn(stream, turn)
            for _ in stream:  # to the end of the body, so the connection is kept alive for the next turn
                pass
        loop.turns.append(time.perf_counter() - sent)
        previous = response["id"]
        input_ = next_input(response, turn, turns)
    loop.total = time.perf_counter() - started
    return loop


def websocket_loop(client: OpenAI, index: int, turns: int, store: bool) -> Loop:
    loop = Loop()
    started = time.perf_counter()
    input_: Any = first_input(index)
    previous: str | None = None
    with client.responses.connect() as connection:
        for turn in range(1, turns + 1):
            sent = time.perf_counter()
            if previous is None:
                connection.response.create(model=MODEL, input=input_, tools=TOOLS, store=store)
            else:
                connection.response.create(model=MODEL, input=input_, tools=TOOLS, store=store,
                                           previous_response_id=previous)
            response = read_turn(connection, turn)
            loop.turns.append(time.perf_counter() - sent)
            previous = response["id"]
            input_ = next_input(response, turn, turns)
    loop.total = time.perf_counter() - started
    return loop


def runner(variant: str, client: OpenAI, turns: int) -> Callable[[int], Loop]:
    if variant == BASELINE:
        return lambda index: http_loop(client, index, turns)
    store = variant == "WS, store:true"
    return lambda index: websocket_loop(client, index, turns, store)


# --- what the gateway and Postgres spend ------------------------------------------------------------

def gateway_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time of the gunicorn master and all its descendants, exited workers included."""
    return sum(tree_cpu_times(master_pid))


class Postgres:
    """The gateway's database, seen from an admin connection: its backends' CPU, its stored rows."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.conn = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}", autocommit=True)
        self.own_pid = self.conn.info.backend_pid

    def backend_cpu(self) -> dict[int, float]:
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                 (self.database, self.own_pid)).fetchall()
        cpu = {}
        for (pid,) in rows:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            cpu[pid] = times.user + times.system
        return cpu

    def stored_responses(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM conversations_app_storedresponse").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings by the backends alive at the second one (a backend that
    exited in between is lost; the pool keeps its connections, so that is rare)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass
class Totals:
    loops: list[Loop] = field(default_factory=list)
    gateway_cpu: float = 0.0
    postgres_cpu: float = 0.0
    stored: int = 0
    wall: float = 0.0


def run_block(variant: str, client: OpenAI, gw_pid: int, pg: Postgres, args: argparse.Namespace,
              start_index: int, totals: Totals) -> None:
    run = runner(variant, client, args.turns)
    stored_before = pg.stored_responses()
    pg_before = pg.backend_cpu()
    cpu_before = gateway_cpu_seconds(gw_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        loops = list(pool.map(run, range(start_index, start_index + args.loops)))
    totals.wall += time.perf_counter() - started
    totals.gateway_cpu += gateway_cpu_seconds(gw_pid) - cpu_before
    totals.postgres_cpu += cpu_delta(pg_before, pg.backend_cpu())
    totals.stored += pg.stored_responses() - stored_before
    totals.loops.extend(loops)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(results: dict[str, Totals], turns: int) -> list[str]:
    base = results[BASELINE]
    base_loop = statistics.median(loop.total for loop in base.loops)
    base_cpu = base.gateway_cpu / (len(base.loops) * turns)
    lines = [
        "| variant | loops | loop p50 ms | loop p95 ms | ms/turn (loop p50 / turns) | turn p50 ms | turn p95 ms "
        "| turn 1 p50 ms | last turn p50 ms | gateway CPU ms/turn | Postgres CPU ms/turn | rows stored "
        "| loop p50 vs HTTP | gateway CPU vs HTTP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, totals in results.items():
        totals_loops = [loop.total for loop in totals.loops]
        every_turn = [t for loop in totals.loops for t in loop.turns]
        first = [loop.turns[0] for loop in totals.loops]
        last = [loop.turns[-1] for loop in totals.loops]
        count = len(totals.loops) * turns
        loop_p50 = statistics.median(totals_loops)
        cpu = totals.gateway_cpu / count
        lines.append(
            f"| {name} | {len(totals.loops)} | {loop_p50 * 1000:.0f} | {percentile(totals_loops, 0.95) * 1000:.0f} "
            f"| {loop_p50 / turns * 1000:.1f} | {statistics.median(every_turn) * 1000:.1f} "
            f"| {percentile(every_turn, 0.95) * 1000:.1f} | {statistics.median(first) * 1000:.1f} "
            f"| {statistics.median(last) * 1000:.1f} | {cpu * 1000:.2f} | {totals.postgres_cpu / count * 1000:.2f} "
            f"| {totals.stored} | {loop_p50 / base_loop:.2f}x | {cpu / base_cpu:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="turns per loop (all but the last call the tool)")
    parser.add_argument("--loops", type=int, default=10, help="measured loops per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2, help="loops running at once")
    args = parser.parse_args()
    if args.turns < 2:
        parser.error("--turns must be at least 2")

    upstream = ToolLoopUpstream(args.turns)
    results: dict[str, Totals] = {name: Totals() for name in VARIANTS}
    started = time.time()
    config = gateway_yaml(upstream.url, metrics=True, log_level="warn")
    try:
        with GatewayProcess(config, workers=2) as gw:
            if gw.proc is None:
                raise RuntimeError("the gateway did not start")
            pg = Postgres(gw.db_name)
            client = OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30)
            try:
                # Warm-up: every variant's code paths, the pools and the HTTP keep-alive connections.
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    for name in VARIANTS:
                        list(pool.map(runner(name, client, args.turns), range(args.concurrency)))
                index = args.concurrency
                for round_ in range(args.rounds):
                    # Rotate the order, so no variant always runs right after another.
                    order = VARIANTS[round_ % len(VARIANTS):] + VARIANTS[:round_ % len(VARIANTS)]
                    for name in order:
                        run_block(name, client, gw.proc.pid, pg, args, index, results[name])
                        index += args.loops
                    print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
            finally:
                client.close()
                pg.close()
    finally:
        upstream.close()
    if upstream.mismatches:
        raise SystemExit(f"the upstream got a wrong history {len(upstream.mismatches)} times, e.g. "
                         f"{upstream.mismatches[0]}")

    loops = args.loops * args.rounds
    expected_calls = (args.concurrency * len(VARIANTS) + loops * len(VARIANTS)) * args.turns
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}: "
        f"{args.rounds} rounds x {args.loops} loops of {args.turns} turns per variant, {args.concurrency} loops at a "
        f"time, upstream first byte after {UPSTREAM_LATENCY * 1000:.0f} ms, {os.cpu_count()} CPUs; "
        f"{upstream.calls} upstream calls (expected {expected_calls}), each with the whole history.",
        "",
        *table(results, args.turns),
    ]
    print("\n".join(lines))
    if upstream.calls != expected_calls:
        raise SystemExit("the upstream got a different number of calls than the loops made")


if __name__ == "__main__":
    main()
