"""A bounded soak: a mixed load against the real gateway, then exact bookkeeping of what it left behind.

    .venv/bin/python benchmarks/soak.py --requests 20000 --concurrency 100 [--seed 7] [--markdown [PATH]]

Starts a fake OpenAI upstream (tests/fakes) and the gateway under gunicorn (2 gevent workers,
metrics on, its own fresh Postgres database), then sends `--requests` requests from
`--concurrency` client threads speaking raw HTTP/1.1 over loopback, in a fixed mix drawn from
`--seed`:

- `json`: non-streamed creates;
- `stream`: streamed creates, read to `response.completed`;
- `chain`: 3-turn chains, each turn (streamed or not) built on the previous one with
  `previous_response_id`; every turn counts as one request;
- `hang-up`: streams whose client hangs up: without reading anything, after a random delay
  (`no-read`, mostly before the first byte), right after `response.created`, or after a random
  number of text deltas (`mid-text`). The upstream answers these slowly and never finishes them
  (it holds the stream open before its last chunk, so it never sends usage), so every hang-up
  happens while its turn is live, and only the gateway can end the upstream call.

Every request's input carries a tag (`soak-<n>`) and `metadata.soak = n`, so each stored row and
each upstream call is matched to exactly one client request. While the load runs, each worker's
RSS is sampled. When the load has drained, it checks, and exits non-zero if any check fails:

- every non-hang-up request succeeded (200; streams end with `response.completed`), with its own
  answer (the text the upstream wrote for its tag), and chains carried their history upstream;
- stored rows = successful creates + hang-ups whose turn the gateway opened (see `check_all`);
- every upstream call belongs to a turn that was opened first; none is left open;
- no row is left `in_progress`;
- `http_requests_total{method="POST",path="/v1/responses"}` summed over statuses = requests sent;
- `provider_tokens_total{type=input|output}` = the stored rows' tokens = the usage the upstream
  sent (a stream cut short sends no usage chunk, so hang-ups add no tokens);
- each worker's RSS grew by at most `--rss-bound-mb` from the end of the warm-up (the first
  `--warmup` fraction of requests) to the end, and no worker was replaced.

tests/e2e/test_soak.py runs the same code at a small size in the test suite. Results of the full
run are in docs/reliability.md. Needs Postgres at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import resource
import secrets
import select
import socket
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test harness, importable once the checkout is on sys.path (E402).
from tests.e2e.gunicorn import GatewayProcess  # noqa: E402
from tests.fakes.openai_upstream import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.server import Recorded, Writer  # noqa: E402

MODEL = "soak"
# Requests per kind, as fractions of all requests (a chain's three turns are three requests).
MIX = {"json": 0.30, "stream": 0.30, "chain": 0.25, "hang-up": 0.15}
CHAIN_TURNS = 3
HANG_UP_MODES = {"no-read": 0.3, "after-created": 0.2, "mid-text": 0.5}
# A hung-up stream's upstream: first byte after 100 ms (so a `no-read` client can leave while the
# gateway waits on it), then 30 words 10 ms apart, then silence until the gateway hangs up.
HANG_UP_WORDS = 30
HANG_UP_FIRST_BYTE = 0.1
HANG_UP_CHUNK_DELAY = 0.01
NO_READ_MAX_DELAY = 0.25
# Longer than any settle wait: an upstream read the gateway failed to drop is still open at the end.
STALL_SECONDS = 180.0
CLIENT_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
TAG = re.compile(r"\bsoak-(\d+)\b")


# --- what the upstream says for each tag (the client computes the same to check answers) -------

def answer_words(tag: int, hang_up: bool) -> list[str]:
    count = HANG_UP_WORDS if hang_up else 5 + tag % 8
    return [f"w{tag}.{i}" for i in range(count)]


def answer_text(tag: int, hang_up: bool = False) -> str:
    return " ".join(answer_words(tag, hang_up))


def usage_of(tag: int, messages: int, hang_up: bool) -> tuple[int, int]:
    """(prompt, completion) tokens the upstream reports for this call: varied, and deterministic."""
    return 9 + 3 * messages + tag % 7, len(answer_words(tag, hang_up)) + tag % 4


def input_text(tag: int, kind: str) -> str:
    return f"soak-{tag} {kind}: say something"


# --- the plan -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallSpec:
    tag: int
    kind: str  # json | stream | chain | hang-up
    stream: bool
    turn: int = 0  # 1..3 within a chain
    hang_up: str = ""  # no-read | after-created | mid-text
    delay: float = 0.0  # no-read: seconds before hanging up
    after_deltas: int = 0  # mid-text: hang up after this many text deltas


@dataclass(frozen=True)
class Job:
    kind: str
    calls: tuple[CallSpec, ...]


def build_plan(total: int, seed: int) -> list[Job]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
    kinds = list(MIX)
    # Per job, so that the share of *requests* matches MIX (a chain job is three requests).
    weights = [MIX[k] / (CHAIN_TURNS if k == "chain" else 1) for k in kinds]
    modes, mode_weights = list(HANG_UP_MODES), list(HANG_UP_MODES.values())
    jobs: list[Job] = []
    tag = 0
    while tag < total:
        kind = rng.choices(kinds, weights)[0]
        if kind == "chain" and total - tag < CHAIN_TURNS:
            kind = "json"
        if kind == "chain":
            calls = tuple(CallSpec(tag + i, "chain", rng.random() < 0.5, turn=i + 1) for i in range(CHAIN_TURNS))
        elif kind == "hang-up":
            mode = rng.choices(modes, mode_weights)[0]
            calls = (CallSpec(tag, kind, True, hang_up=mode, delay=round(rng.uniform(0, NO_READ_MAX_DELAY), 4),
                              after_deltas=rng.randint(1, HANG_UP_WORDS - 1)),)
        else:
            calls = (CallSpec(tag, kind, kind == "stream"),)
        jobs.append(Job(kind, calls))
        tag += len(calls)
    return jobs


# --- the fake upstream ----------------------------------------------------------------------------

@dataclass
class UpstreamCall:
    tag: int
    hang_up: bool
    stream: bool
    messages: list[tuple[str, str]]
    usage: tuple[int, int]
    recorded: Recorded
    usage_sent: bool = False  # the whole answer, usage included, was written


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class SoakUpstream(FakeOpenAI):
    """Answers each call by the tag in its last user message, and keeps what it sent per call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[UpstreamCall] = []

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        body = recorded.json or {}
        messages = [(m.get("role", ""), _content_text(m.get("content"))) for m in body.get("messages") or []]
        last = next((text for role, text in reversed(messages) if role == "user"), "")
        match = TAG.search(last)
        tag = int(match.group(1)) if match else -1
        hang_up = " hang-up:" in last
        prompt, completion = usage_of(tag, len(messages), hang_up)
        call = UpstreamCall(tag, hang_up, bool(body.get("stream")), messages, (prompt, completion), recorded)
        with self._lock:
            self.calls.append(call)
        text = answer_text(tag, hang_up)
        if hang_up:
            # Frames: role, one per word, finish, usage, [DONE]: stop before `finish`.
            reply = Reply(text=text, prompt_tokens=prompt, completion_tokens=completion,
                          first_byte_delay=HANG_UP_FIRST_BYTE, chunk_delay=HANG_UP_CHUNK_DELAY,
                          stall_after=1 + len(answer_words(tag, True)), stall_seconds=STALL_SECONDS)
        else:
            reply = Reply(text=text, prompt_tokens=prompt, completion_tokens=completion)
        whole = False
        try:
            super().handle(recorded, reply, writer)
            whole = not recorded.client_disconnected.is_set()
        finally:
            call.usage_sent = whole and not hang_up

    def open_calls(self) -> int:
        """Calls the upstream is still answering (for a hang-up: the gateway has not dropped it)."""
        return sum(1 for call in list(self.calls) if not call.recorded.finished.is_set())


# --- the client -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    spec: CallSpec
    sent: bool = False
    status: int | None = None
    response_id: str | None = None
    completed: bool = False  # 200, and `response.completed` (stream) or status completed (JSON)
    text: str = ""
    error: str = ""
    latency: float = 0.0
    got_bytes: bool = False  # hang-ups: the client received anything before leaving
    previous_response_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.sent and not self.spec.hang_up and self.completed and not self.error


class _Reader:
    """An HTTP/1.1 response read incrementally from a raw socket (Content-Length, chunked, or to EOF)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self._raw = b""
        self._chunked = False
        self._chunks_done = False
        self._pos = 0
        self.received = 0

    def pump(self) -> bool:
        """One read; False at EOF."""
        data = self.sock.recv(65536)
        if not data:
            return False
        self.feed(data)
        return True

    def drain_available(self) -> None:
        """Whatever has arrived, without waiting."""
        while select.select([self.sock], [], [], 0)[0]:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self._raw += data
        if self.status is None:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._raw[:end].decode("latin-1").split("\r\n")
            self._raw = self._raw[end + 4:]
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked:
            self.body += self._raw
            self._raw = b""
            return
        while not self._chunks_done:
            eol = self._raw.find(b"\r\n")
            if eol < 0:
                return
            size = int(self._raw[:eol].split(b";")[0], 16)
            if size == 0:
                self._chunks_done = True
                return
            if len(self._raw) < eol + 2 + size + 2:
                return
            self.body += self._raw[eol + 2:eol + 2 + size]
            self._raw = self._raw[eol + 2 + size + 2:]

    def events(self) -> list[dict[str, Any]]:
        """Server-sent events completed since the last call."""
        out = []
        while (end := self.body.find(b"\n\n", self._pos)) >= 0:
            block = bytes(self.body[self._pos:end])
            self._pos = end + 2
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    out.append(json.loads(line[6:]))
        return out


def _request(body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    return (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(raw)) + raw


def _output_text(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response.get("output") or [] if item.get("type") == "message"
                   for part in item.get("content") or [] if part.get("type") == "output_text")


def send(port: int, spec: CallSpec, previous: str | None) -> Outcome:
    outcome = Outcome(spec, previous_response_id=previous)
    body: dict[str, Any] = {"model": MODEL, "input": input_text(spec.tag, spec.kind), "stream": spec.stream,
                            "metadata": {"soak": str(spec.tag)}}
    if previous:
        body["previous_response_id"] = previous
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(_request(body))
            outcome.sent = True
            reader = _Reader(sock)
            if spec.stream:
                _read_stream(reader, outcome)
            else:
                _read_json(reader, outcome)
    except Exception as error:  # noqa: BLE001 - any failure is this request's outcome, reported with the rest
        outcome.error = outcome.error or f"{type(error).__name__}: {error}"
    outcome.latency = time.perf_counter() - started
    return outcome


def _read_json(reader: _Reader, outcome: Outcome) -> None:
    while reader.pump():
        pass
    outcome.status = reader.status
    if reader.status != 200:
        outcome.error = f"HTTP {reader.status}: {bytes(reader.body[:200])!r}"
        return
    response = json.loads(bytes(reader.body))
    outcome.response_id = response.get("id")
    outcome.text = _output_text(response)
    outcome.completed = response.get("status") == "completed"
    if not outcome.completed:
        outcome.error = f"status {response.get('status')}"


def _read_stream(reader: _Reader, outcome: Outcome) -> None:
    spec = outcome.spec
    deltas: list[str] = []
    if spec.hang_up == "no-read":
        time.sleep(spec.delay)
        reader.drain_available()
        outcome.got_bytes = reader.received > 0
        outcome.status = reader.status
        for event in reader.events():
            if event.get("type") == "response.created":
                outcome.response_id = event["response"]["id"]
        return  # closing the socket is the hang-up
    while reader.pump():
        if reader.status != 200:
            continue
        for event in reader.events():
            kind = event.get("type")
            if kind == "response.created":
                outcome.response_id = event["response"]["id"]
            elif kind == "response.output_text.delta":
                deltas.append(event["delta"])
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                outcome.completed = kind == "response.completed"
                if not outcome.completed:
                    outcome.error = f"{kind}: {json.dumps(event['response'].get('error'))}"
            outcome.text = "".join(deltas)
            if (spec.hang_up == "after-created" and outcome.response_id) or (
                    spec.hang_up == "mid-text" and len(deltas) >= spec.after_deltas):
                outcome.got_bytes = True
                outcome.status = reader.status
                return  # hang up
    outcome.status = reader.status
    if reader.status != 200:
        outcome.error = f"HTTP {reader.status}: {bytes(reader.body[:200])!r}"
    elif spec.hang_up:
        outcome.error = "the stream ended before the client's hang-up point"
    elif not outcome.completed and not outcome.error:
        outcome.error = "the stream ended without a terminal event"


def run_job(port: int, job: Job, done: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    previous: str | None = None
    for spec in job.calls:
        if outcomes and not outcomes[-1].ok:
            outcomes.append(Outcome(spec, error="not sent: the previous turn failed"))
            continue
        outcome = send(port, spec, previous)
        previous = outcome.response_id
        outcomes.append(outcome)
        done(outcome)
    return outcomes


# --- observing the gateway ------------------------------------------------------------------------

@dataclass
class RssSample:
    at: float
    requests_done: int
    rss: dict[int, int]  # worker pid -> bytes


class RssSampler:
    """Each gunicorn worker's RSS every `interval` seconds, and on demand (`mark`)."""

    def __init__(self, master_pid: int, progress: Callable[[], int], interval: float = 0.5) -> None:
        self.master = psutil.Process(master_pid)
        self.progress = progress
        self.interval = interval
        self.samples: list[RssSample] = []
        self.marks: dict[str, RssSample] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def workers(self) -> list[psutil.Process]:
        return self.master.children()

    def sample(self) -> RssSample:
        rss = {}
        for worker in self.workers():
            with contextlib.suppress(psutil.Error):  # a worker that just exited has no RSS to report
                rss[worker.pid] = worker.memory_info().rss
        sample = RssSample(time.monotonic(), self.progress(), rss)
        self.samples.append(sample)
        return sample

    def mark(self, name: str) -> RssSample:
        self.marks[name] = sample = self.sample()
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, pid: int) -> int:
        return max((s.rss.get(pid, 0) for s in self.samples), default=0)


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        samples.append((name, dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return samples


def metric_sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(value for n, have, value in samples if n == name and all(have.get(k) == v for k, v in labels.items()))


def scrape(gw: GatewayProcess) -> list[tuple[str, dict[str, str], float]]:
    return parse_metrics(requests.get(f"{gw.url}/metrics", timeout=10).text)


def _pg_url(gw: GatewayProcess) -> str:
    return gw.database_url.replace("postgres://", "postgresql://", 1)


@dataclass
class Row:
    id: str
    status: str
    interrupted: str
    tag: int | None
    input_tokens: int
    output_tokens: int
    previous_response_id: str | None


def stored_rows(gw: GatewayProcess) -> list[Row]:
    with psycopg.connect(_pg_url(gw)) as conn:
        result = conn.execute(
            "SELECT id, status, interrupted, settings->'metadata'->>'soak', input_tokens, output_tokens, "
            "previous_response_id FROM conversations_app_storedresponse").fetchall()
    return [Row(r[0], r[1], r[2], int(r[3]) if r[3] and r[3].isdigit() else None, r[4], r[5], r[6]) for r in result]


def in_progress_rows(gw: GatewayProcess) -> int:
    with psycopg.connect(_pg_url(gw)) as conn:
        row = conn.execute("SELECT count(*) FROM conversations_app_storedresponse "
                           "WHERE status = 'in_progress'").fetchone()
    return int(row[0]) if row else 0


# --- the result -----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class WorkerRss:
    pid: int
    start: int
    warm: int
    end: int
    peak: int

    @property
    def growth(self) -> int:
        return self.end - self.warm


@dataclass
class SoakResult:
    requests: int
    concurrency: int
    seed: int
    workers: int
    warmup_requests: int
    rss_bound_mb: float
    outcomes: list[Outcome]
    load_seconds: float
    settle_seconds: float
    worker_cpu_seconds: float
    soak_cpu_seconds: float  # this process: the client threads and the fake upstream
    rss: list[WorkerRss]
    checks: list[Check]
    hang_up_counts: dict[str, int] = field(default_factory=dict)
    http_by_status: dict[str, int] = field(default_factory=dict)
    log_lines: dict[str, int] = field(default_factory=dict)
    log_excerpt: list[str] = field(default_factory=list)
    # (requests done, {worker pid: RSS}) at every tenth of the run, then after the drain.
    rss_series: list[tuple[int, dict[int, int]]] = field(default_factory=list)
    database: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def sent(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.sent]

    def render(self, markdown: bool = False) -> str:
        return render(self, markdown)


def _mb(value: int) -> str:
    return f"{value / 2**20:.1f}"


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def _table(headers: list[str], rows: list[list[str]], markdown: bool, right: set[int] | None = None) -> list[str]:
    right = right or set()
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
        return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()
    return [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def render(result: SoakResult, markdown: bool = False) -> str:
    sent = result.sent
    lines = [
        (f"Soak: {len(sent)} requests sent (of {result.requests} planned) at concurrency {result.concurrency}, "
         f"seed {result.seed}, {result.workers} gunicorn gevent workers; load {result.load_seconds:.1f} s "
         f"({len(sent) / result.load_seconds:.0f} requests/s), drained and settled in {result.settle_seconds:.1f} s; "
         f"CPU per request: {result.worker_cpu_seconds * 1000 / max(1, len(sent)):.2f} ms in the gateway's workers, "
         f"{result.soak_cpu_seconds * 1000 / max(1, len(sent)):.2f} ms in the clients and the fake upstream."),
        "",
    ]
    kinds: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in sent:
        spec = outcome.spec
        name = spec.kind
        if spec.kind == "chain":
            name = f"chain turn {spec.turn} ({'stream' if spec.stream else 'json'})"
        elif spec.hang_up:
            name = f"hang-up {spec.hang_up}"
        kinds[name].append(outcome)
    rows = []
    for name in sorted(kinds):
        group = kinds[name]
        hang = name.startswith("hang-up")
        latencies = [o.latency for o in group]
        rows.append([name, str(len(group)), "-" if hang else str(sum(o.ok for o in group)),
                     _ms(latencies, 0.5), _ms(latencies, 0.99), _ms(latencies, 1.0)])
    lines += ["Requests by kind (latency: to the last byte; hang-ups: until the client hung up):", ""]
    lines += _table(["kind", "sent", "ok", "p50 ms", "p99 ms", "max ms"], rows, markdown, {1, 2, 3, 4, 5})
    if result.hang_up_counts:
        lines += ["", "Hang-ups: " + ", ".join(f"{k} {v}" for k, v in result.hang_up_counts.items()) + "."]
    lines += ["", (f"Worker RSS (MB; warm-up = the first {result.warmup_requests} requests; bound: growth after "
                   f"warm-up <= {result.rss_bound_mb:g} MB):"), ""]
    rows = [[str(w.pid), _mb(w.start), _mb(w.warm), _mb(w.end), _mb(w.peak), f"{w.growth / 2**20:+.1f}",
             f"{w.growth / max(1, w.warm) * 100:+.1f} %"] for w in result.rss]
    lines += _table(["worker", "at start", "after warm-up", "at end", "peak", "growth", "growth %"], rows,
                    markdown, {1, 2, 3, 4, 5, 6})
    if result.rss_series:
        lines += ["", "Worker RSS (MB) as the run went on, by requests done (the last column is after the drain):", ""]
        headers = ["worker"] + [str(done) for done, _ in result.rss_series[:-1]] + ["end"]
        rows = [[str(w.pid)] + [_mb(rss[w.pid]) if w.pid in rss else "-" for _, rss in result.rss_series]
                for w in result.rss]
        lines += _table(headers, rows, markdown, set(range(1, len(headers))))
    if result.database:
        lines += ["", "Database: " + ", ".join(f"{k} {v:.0f}" for k, v in result.database.items()) + "."]
    lines += ["", "Checks:", ""]
    if markdown:
        lines += _table(["check", "result", "detail"],
                        [[c.name, "ok" if c.ok else "**FAILED**", c.detail] for c in result.checks], markdown)
    else:
        for check in result.checks:
            lines.append(f"{'ok    ' if check.ok else 'FAILED'}  {check.name}")
            lines += textwrap.wrap(check.detail, 110, initial_indent=" " * 8, subsequent_indent=" " * 8,
                                   break_on_hyphens=False)
    if result.log_lines:
        lines += ["", "Gateway log lines by level: " + ", ".join(f"{k} {v}" for k, v in result.log_lines.items())
                  + "."]
    if result.log_excerpt:
        lines += ["", "Warnings, errors and exceptions in the gateway log (count x line):", ""]
        lines += [("    " if markdown else "  ") + line for line in result.log_excerpt]
    return "\n".join(lines)


# --- the checks -----------------------------------------------------------------------------------

def _examples(items: Iterable[Any], limit: int = 3) -> str:
    items = list(items)
    return "; ".join(str(i) for i in items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def check_all(result_outcomes: list[Outcome], rows: list[Row], upstream: SoakUpstream,
              metrics: list[tuple[str, dict[str, str], float]], in_progress: int) -> tuple[list[Check], dict[str, int]]:
    checks: list[Check] = []
    sent = [o for o in result_outcomes if o.sent]
    ordinary = [o for o in result_outcomes if not o.spec.hang_up]
    successes = [o for o in ordinary if o.ok]
    hang_ups = [o for o in sent if o.spec.hang_up]
    # A hang-up fails when it got an error (an error status, or the stream ended) before its hang-up point.
    failed = [o for o in ordinary if not o.ok] + [o for o in hang_ups if o.error]
    by_kind = Counter(o.spec.kind for o in successes)
    checks.append(Check(
        "every non-hang-up request succeeded", not failed,
        f"{len(successes)}/{len(ordinary)} (json {by_kind['json']}, stream {by_kind['stream']}, chain turns "
        f"{by_kind['chain']}), and {len(hang_ups) - sum(1 for o in hang_ups if o.error)}/{len(hang_ups)} hang-ups "
        "met no error before hanging up"
        + (f"; failures: {_examples(f'soak-{o.spec.tag}: {o.error}' for o in failed)}" if failed else "")))

    wrong = [o for o in successes if o.text != answer_text(o.spec.tag)]
    wrong += [o for o in hang_ups if not answer_text(o.spec.tag, True).startswith(o.text)]
    checks.append(Check(
        "every answer was its own", not wrong,
        f"{len(successes)} answers equal the text the upstream wrote for their tag, {len(hang_ups)} hang-ups saw "
        "a prefix of theirs" + (f"; wrong: {_examples(f'soak-{o.spec.tag}: {o.text[:60]!r}' for o in wrong)}"
                                if wrong else "")))

    calls_by_tag: dict[int, list[UpstreamCall]] = defaultdict(list)
    for call in upstream.calls:
        calls_by_tag[call.tag].append(call)

    # Chains: each turn's upstream call carried the whole history, and its row points at the previous turn.
    rows_by_id = {row.id: row for row in rows}
    chain_turns = [o for o in successes if o.spec.kind == "chain"]
    broken = []
    for outcome in chain_turns:
        spec = outcome.spec
        first = spec.tag - (spec.turn - 1)
        expected: list[tuple[str, str]] = []
        for tag in range(first, spec.tag):
            expected += [("user", input_text(tag, "chain")), ("assistant", answer_text(tag))]
        expected.append(("user", input_text(spec.tag, "chain")))
        calls = calls_by_tag.get(spec.tag, [])
        row = rows_by_id.get(outcome.response_id or "")
        if len(calls) != 1 or calls[0].messages != expected:
            broken.append(f"soak-{spec.tag}: upstream got {[c.messages for c in calls]}")
        elif row is None or row.previous_response_id != outcome.previous_response_id:
            broken.append(f"soak-{spec.tag}: row's previous_response_id is "
                          f"{row.previous_response_id if row else 'missing'}, not {outcome.previous_response_id}")
    checks.append(Check(
        "chains carried their history", not broken,
        f"{len(chain_turns)} chain turns: each upstream call had exactly the previous turns' inputs and answers, "
        "each row points at the turn before" + (f"; broken: {_examples(broken, 2)}" if broken else "")))

    # Stored rows, matched to requests by their metadata tag.
    rows_by_tag: dict[int, list[Row]] = defaultdict(list)
    untagged = []
    for row in rows:
        (rows_by_tag[row.tag].append(row) if row.tag is not None else untagged.append(row.id))
    spec_by_tag = {o.spec.tag: o for o in sent}
    problems = []
    problems += [f"row {r} has no tag" for r in untagged]
    problems += [f"soak-{t} has {len(rs)} rows" for t, rs in rows_by_tag.items() if len(rs) > 1]
    problems += [f"row for soak-{t}, which was never sent" for t in rows_by_tag if t not in spec_by_tag]
    for outcome in successes:
        got = rows_by_tag.get(outcome.spec.tag, [])
        if not got or got[0].id != outcome.response_id or got[0].status != "completed":
            problems.append(f"soak-{outcome.spec.tag}: rows {[(r.id, r.status) for r in got]}, client saw "
                            f"{outcome.response_id} completed")
    seen_id = [o for o in hang_ups if o.response_id]
    no_id = [o for o in hang_ups if not o.response_id]
    opened_no_id = [o for o in no_id if rows_by_tag.get(o.spec.tag)]
    for outcome in hang_ups:
        got = rows_by_tag.get(outcome.spec.tag, [])
        if outcome.response_id and (not got or got[0].id != outcome.response_id):
            problems.append(f"soak-{outcome.spec.tag}: hung up after seeing {outcome.response_id}, rows "
                            f"{[r.id for r in got]}")
        if got and (got[0].status, got[0].interrupted) != ("incomplete", "client_gone"):
            problems.append(f"soak-{outcome.spec.tag}: hung up, row is {got[0].status}/{got[0].interrupted or '-'}")
    expected_rows = len(successes) + len(seen_id) + len(opened_no_id)
    checks.append(Check(
        "stored rows = successful creates + hang-ups whose turn was opened",
        not problems and len(rows) == expected_rows,
        f"{len(rows)} rows = {len(successes)} successful creates (all `completed`) + {len(seen_id)} hang-ups after "
        f"`response.created` + {len(opened_no_id)} hang-ups before it whose turn the gateway had opened (all "
        f"`incomplete`, client_gone); {len(no_id) - len(opened_no_id)} hang-ups left before the gateway opened "
        "their turn and have no row" + (f"; problems: {_examples(problems)}" if problems else "")))

    # Upstream calls: one per success, at most one per hang-up, each for a turn that had been opened.
    called_hang_ups = [o for o in hang_ups if calls_by_tag.get(o.spec.tag)]
    problems = []
    problems += [f"call for soak-{t}, never sent" for t in calls_by_tag if t not in spec_by_tag]
    problems += [f"soak-{o.spec.tag}: {len(calls_by_tag.get(o.spec.tag, []))} calls" for o in successes
                 if len(calls_by_tag.get(o.spec.tag, [])) != 1]
    problems += [f"soak-{o.spec.tag}: {len(calls_by_tag[o.spec.tag])} calls" for o in called_hang_ups
                 if len(calls_by_tag[o.spec.tag]) > 1]
    problems += [f"soak-{o.spec.tag}: upstream called, no row" for o in called_hang_ups
                 if not rows_by_tag.get(o.spec.tag)]
    provider_calls = metric_sum(metrics, "provider_requests_total")
    provider_success = metric_sum(metrics, "provider_requests_total", status="success")
    provider_cancelled = metric_sum(metrics, "provider_requests_total", status="cancelled")
    opened_not_called = len(seen_id) + len(opened_no_id) - len(called_hang_ups)
    checks.append(Check(
        "upstream calls = successes + hang-ups that reached it",
        # provider_requests_total counts attempts: a client that hangs up in the instant between its
        # attempt's start and the request being sent is `cancelled` without reaching the upstream,
        # which can only happen to a turn that was opened and not called.
        not problems and len(upstream.calls) == len(successes) + len(called_hang_ups)
        and provider_success == len(successes)
        and len(called_hang_ups) <= provider_cancelled <= len(called_hang_ups) + opened_not_called
        and provider_calls == provider_success + provider_cancelled,
        f"{len(upstream.calls)} calls = {len(successes)} + {len(called_hang_ups)}, each for a turn with a row "
        f"({opened_not_called} opened turns were cancelled before their call); provider_requests_total "
        f"{provider_calls:.0f} (success {provider_success:.0f}, cancelled {provider_cancelled:.0f}, of which "
        f"{provider_cancelled - len(called_hang_ups):.0f} before their request was sent)"
        + (f"; problems: {_examples(problems)}" if problems else "")))

    abandoned = [c for c in upstream.calls if c.hang_up]
    left_open = [c.tag for c in abandoned if not c.recorded.finished.is_set()]
    not_dropped = [c.tag for c in abandoned
                   if c.recorded.finished.is_set() and not c.recorded.client_disconnected.is_set()]
    checks.append(Check(
        "the gateway dropped every abandoned upstream stream", not left_open and not not_dropped,
        f"{len(abandoned)} hung-up upstream streams, all closed by the gateway"
        if not left_open and not not_dropped else
        f"still open: {_examples(left_open, 5)}; ended without the gateway closing: {_examples(not_dropped, 5)}"))

    turns_live = metric_sum(metrics, "gateway_turns_in_flight")
    checks.append(Check(
        "no row left in_progress", in_progress == 0 and turns_live == 0,
        f"{in_progress} rows in_progress, gateway_turns_in_flight {turns_live:.0f}, after the load drained"))

    http = {labels.get("status", ""): int(value) for name, labels, value in metrics if name == "http_requests_total"
            and labels.get("method") == "POST" and labels.get("path") == "/v1/responses"}
    checks.append(Check(
        "http_requests_total = requests sent", sum(http.values()) == len(sent),
        f'{sum(http.values())} counted (POST /v1/responses, by status: '
        + ", ".join(f"{s}: {n}" for s, n in sorted(http.items())) + f") for {len(sent)} sent"))

    upstream_in = sum(c.usage[0] for c in upstream.calls if c.usage_sent)
    upstream_out = sum(c.usage[1] for c in upstream.calls if c.usage_sent)
    metric_in = metric_sum(metrics, "provider_tokens_total", type="input")
    metric_out = metric_sum(metrics, "provider_tokens_total", type="output")
    stored_in = sum(r.input_tokens for r in rows)
    stored_out = sum(r.output_tokens for r in rows)
    usage_calls = sum(1 for c in upstream.calls if c.usage_sent)
    checks.append(Check(
        "provider_tokens_total = stored tokens = the upstream's usage",
        upstream_in == metric_in == stored_in and upstream_out == metric_out == stored_out,
        f"input {metric_in:.0f} / {stored_in} / {upstream_in}, output {metric_out:.0f} / {stored_out} / "
        f"{upstream_out} (metric / rows / upstream; usage sent by {usage_calls} calls, none by the "
        f"{len(abandoned)} hung-up streams)"))

    modes = Counter(o.spec.hang_up for o in hang_ups)
    counts = {**{f"{mode}": modes[mode] for mode in HANG_UP_MODES},
              "saw their id": len(seen_id), "got bytes but no id": sum(1 for o in no_id if o.got_bytes),
              "got nothing": sum(1 for o in no_id if not o.got_bytes)}
    return checks, counts


def _rss_check(rss: list[WorkerRss], bound_mb: float, replaced: bool) -> Check:
    worst = max((w.growth for w in rss), default=0)
    ok = not replaced and bool(rss) and worst <= bound_mb * 2**20
    detail = ", ".join(f"worker {w.pid}: {_mb(w.warm)} -> {_mb(w.end)} MB ({w.growth / 2**20:+.1f})" for w in rss)
    if replaced:
        detail += "; a worker was replaced during the run"
    return Check(f"worker RSS growth after warm-up <= {bound_mb:g} MB", ok, detail)


def _log_summary(log: str) -> tuple[dict[str, int], list[str]]:
    """Log records by level, and the distinct warnings, errors and exceptions with their counts
    (ids and timestamps blanked, so that one cause is one line)."""
    levels: Counter[str] = Counter()
    notable: Counter[str] = Counter()
    for line in log.splitlines():
        match = re.search(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\b", line)
        if match:
            levels[match.group(1)] += 1
            if match.group(1) != "INFO" and match.group(1) != "DEBUG":
                notable[line[match.start():]] += 1
        elif line.startswith("Traceback"):
            levels["Traceback"] += 1
        elif re.match(r"^[\w.]+(Error|Exception|Exit|Timeout)\w*(: |$)", line):
            notable["exception " + line] += 1
    normal: Counter[str] = Counter()
    for text, count in notable.items():
        text = re.sub(r"\b(resp|conv|msg)_[0-9a-f]+", r"\1_…", text)
        text = re.sub(r"request_id=[\w-]+", "request_id=…", text)
        normal[text[:240]] += count
    return dict(levels), [f"{count} x {text}" for text, count in normal.most_common(12)]


# --- the run ---------------------------------------------------------------------------------------

def gateway_config(upstream_url: str) -> str:
    # JSON is YAML. No retries: each turn is exactly one upstream call, and a failure shows as it is.
    return json.dumps({
        "logging": {"format": "text", "level": "warn"},
        "observability": {"enabled": True, "metrics": {"enabled": True}},
        "providers": {"openai": {"type": "openai", "api_key": "k", "endpoint": f"{upstream_url}/v1",
                                 "retry": {"max_retries": 0}}},
        "models": [{"name": MODEL, "provider": "openai", "provider_model_id": "soak-upstream"}],
    })


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_soak(requests_: int = 2000, concurrency: int = 50, *, seed: int = 7, workers: int = 2,
             warmup: float = 0.1, rss_bound_mb: float = 20.0, log_path: str | None = None,
             env: dict[str, str] | None = None, log: Callable[[str], None] = lambda message: None) -> SoakResult:
    plan = build_plan(requests_, seed)
    warmup_requests = max(1, int(requests_ * warmup))
    upstream = SoakUpstream()
    gw = GatewayProcess(gateway_config(upstream.url), workers=workers, env=env,
                        database=f"gw_soak_{secrets.token_hex(4)}")
    try:
        gw.start()
        if gw.proc is None:
            raise RuntimeError("the gateway did not start")
        done_lock = threading.Lock()
        done_count = 0
        sampler = RssSampler(gw.proc.pid, lambda: done_count)
        step = max(1, requests_ // 10)

        def done(outcome: Outcome) -> None:
            nonlocal done_count
            with done_lock:
                done_count += 1
                count = done_count
            if count == warmup_requests:
                sampler.mark("warm")
            if count % step == 0:
                sampler.mark(f"{count}")
                log(f"{count}/{requests_} requests")

        worker_pids = {w.pid for w in sampler.workers()}
        cpu_before = sum(sum(w.cpu_times()[:2]) for w in sampler.workers())
        own_before = _own_cpu()
        sampler.mark("start")
        sampler.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="soak-client") as pool:
            outcomes = [o for job_outcomes in pool.map(lambda job: run_job(gw.port, job, done), plan)
                        for o in job_outcomes]
        load_seconds = time.perf_counter() - started

        # Drain: every turn settled, every abandoned upstream stream dropped (bounded wait).
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            if (in_progress_rows(gw) == 0 and upstream.open_calls() == 0
                    and metric_sum(scrape(gw), "gateway_turns_in_flight") == 0):
                break
            time.sleep(0.25)
        settle_seconds = time.perf_counter() - started - load_seconds
        end = sampler.mark("end")
        sampler.stop()
        cpu = sum(sum(w.cpu_times()[:2]) for w in sampler.workers()) - cpu_before
        own_cpu = _own_cpu() - own_before
        replaced = {w.pid for w in sampler.workers()} != worker_pids
        log(f"load {load_seconds:.1f} s, settled {settle_seconds:.1f} s; checking")

        metrics = scrape(gw)
        rows = stored_rows(gw)
        checks, hang_up_counts = check_all(outcomes, rows, upstream, metrics, in_progress_rows(gw))
        start, warm = sampler.marks["start"], sampler.marks.get("warm", end)
        rss = [WorkerRss(pid, start.rss.get(pid, 0), warm.rss.get(pid, 0), end.rss.get(pid, 0), sampler.peak(pid))
               for pid in sorted(worker_pids)]
        checks.append(_rss_check(rss, rss_bound_mb, replaced))
        gateway_log = gw.log()
        if log_path:
            Path(log_path).write_text(gateway_log)
        levels, excerpt = _log_summary(gateway_log)
        http = {labels["status"]: int(value) for name, labels, value in metrics
                if name == "http_requests_total" and labels.get("path") == "/v1/responses"}
        series = [(int(name), sample.rss) for name, sample in sampler.marks.items() if name.isdigit()]
        series.append((end.requests_done, end.rss))
        database = {
            "statements (django_db_execute_total)": metric_sum(metrics, "django_db_execute_total"),
            "pool checkouts (django_db_new_connections_total)": metric_sum(metrics, "django_db_new_connections_total"),
            # Each wait for a pooled connection that ran out DB_POOL_TIMEOUT, including those the
            # gateway then renewed because the pool was only busy (DB_POOL_BUSY_TIMEOUT).
            "checkout waits that ran out (django_db_new_connection_errors_total)":
                metric_sum(metrics, "django_db_new_connection_errors_total"),
            "failed statements (django_db_errors_total)": metric_sum(metrics, "django_db_errors_total"),
        }
        return SoakResult(requests_, concurrency, seed, workers, warmup_requests, rss_bound_mb, outcomes,
                          load_seconds, settle_seconds, cpu, own_cpu, rss, checks, hang_up_counts, http, levels,
                          excerpt, series, database)
    finally:
        gw.stop()
        upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of requests before the RSS baseline")
    parser.add_argument("--rss-bound-mb", type=float, default=20.0, help="allowed RSS growth per worker after warm-up")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the gateway, e.g. DB_POOL_MAX_SIZE=16 (repeatable)")
    parser.add_argument("--log", metavar="PATH", help="keep the gateway's log (gunicorn's output) in PATH")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="PATH",
                        help="print the summary as Markdown, or write it to PATH (the plain summary still prints)")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    result = run_soak(args.requests, args.concurrency, seed=args.seed, workers=args.workers, warmup=args.warmup,
                      rss_bound_mb=args.rss_bound_mb, log_path=args.log,
                      env=dict(item.split("=", 1) for item in args.env), log=log)
    if args.markdown == "-":
        print(result.render(markdown=True))
    else:
        print(result.render())
        if args.markdown:
            Path(args.markdown).write_text(result.render(markdown=True) + "\n")
            log(f"Markdown summary written to {args.markdown}")
    failed = [check.name for check in result.checks if not check.ok]
    if failed:
        log("FAILED: " + "; ".join(failed))
        return 1
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
