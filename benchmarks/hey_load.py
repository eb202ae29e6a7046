"""Load from `hey` (Debian package `hey`), read from its per-request CSV.

hey's summary gives averages and a few percentiles but no time to first byte per request; its CSV
(`-o csv`) gives, for every request that got an answer, the total time, the time to the first
response byte and the status. Requests that failed without an answer (refused, reset, timed out)
appear only in the summary's error distribution, so they are counted as the requests missing from
the CSV: hey sends exactly `n // c * c` requests.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class HeyRequest:
    seconds: float  # request sent to body read
    first_byte: float  # connection (if new) + request write + wait for the first response byte
    status: int
    started: float  # seconds after hey started


@dataclass
class HeyResult:
    requests: list[HeyRequest]
    expected: int  # how many hey sent

    @property
    def answered(self) -> int:
        return len(self.requests)

    @property
    def errors(self) -> int:
        """Requests without a 2xx answer, including those that got no answer at all."""
        return self.expected - self.answered + sum(1 for r in self.requests if not 200 <= r.status < 300)

    @property
    def wall(self) -> float:
        return max((r.started + r.seconds for r in self.requests), default=0.0)

    @property
    def per_second(self) -> float:
        return self.answered / self.wall if self.wall else 0.0

    def failures(self) -> dict[str, int]:
        """What the errors were: "no answer" and the count of each non-2xx status."""
        counts: dict[str, int] = {}
        if self.expected > self.answered:
            counts["no answer"] = self.expected - self.answered
        for r in self.requests:
            if not 200 <= r.status < 300:
                counts[str(r.status)] = counts.get(str(r.status), 0) + 1
        return counts

    def latencies(self) -> list[float]:
        return [r.seconds for r in self.requests]

    def first_bytes(self) -> list[float]:
        return [r.first_byte for r in self.requests]


def parse_csv(text: str, expected: int) -> HeyResult:
    """hey's `-o csv` output: a header, then response-time, DNS+dialup, DNS, Request-write,
    Response-delay, Response-read, status-code, offset (seconds, 4 decimals) per answered request."""
    rows = csv.DictReader(io.StringIO(text))
    required = {"response-time", "DNS+dialup", "Request-write", "Response-delay", "status-code", "offset"}
    if rows.fieldnames is None or not required <= set(rows.fieldnames):
        raise ValueError(f"not hey's CSV output: {text[:200]!r}")
    requests = [
        HeyRequest(seconds=float(row["response-time"]),
                   first_byte=float(row["DNS+dialup"]) + float(row["Request-write"]) + float(row["Response-delay"]),
                   status=int(row["status-code"]), started=float(row["offset"]))
        for row in rows
    ]
    return HeyResult(requests, expected)


def hey_binary() -> str:
    return shutil.which("hey") or "/usr/bin/hey"


def ensure_hey() -> None:
    """Install Debian's hey when it is missing (as root, which the development VM is); benchmarks
    are not tests, so scripts/test does not install it."""
    if os.path.exists(hey_binary()):
        return
    if os.geteuid() != 0:
        raise SystemExit("hey is missing: apt-get install -y hey")
    print("installing hey (apt-get)", file=sys.stderr)
    apt = shutil.which("apt-get") or "/usr/bin/apt-get"
    subprocess.run([apt, "update", "-qq"], check=True)  # noqa: S603 - fixed arguments
    subprocess.run([apt, "install", "-y", "-qq", "hey"], check=True,  # noqa: S603 - fixed arguments
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def run_hey(url: str, body: bytes, *, requests: int, concurrency: int, headers: dict[str, str] | None = None,
            timeout: int = 60) -> HeyResult:
    # POST every time with the same body; keep-alive on, as SDK clients do.
    command = [hey_binary(), "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-T", "application/json",
               "-t", str(timeout), "-o", "csv", "-d", body.decode()]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=False)  # noqa: S603 - our own load
    if done.returncode != 0:
        raise RuntimeError(f"hey failed ({done.returncode}): {done.stderr[-500:]}")
    return parse_csv(done.stdout, requests // concurrency * concurrency)
