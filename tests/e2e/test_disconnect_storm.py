"""A storm of clients hanging up mid-stream, as users' traffic does, against a real gunicorn.

Three rounds of 200 concurrent streams, each client hanging up at a random point (before the
first byte, after `response.created`, after some deltas) or reading to the end; then 200 ordinary
requests. Every ordinary request must succeed; Postgres connections, the workers' turns and
upstream calls, and the sockets to the upstream must be back to their baseline; and every turn
whose id a client saw is settled: `incomplete` if its client hung up, `completed` otherwise.
(This storm once left every pooled connection stuck mid-query, and the gateway answered 500s
until restarted.)
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
import pytest
import requests

from responses_app.providers.http import POOL_SIZE
from tests.e2e.gunicorn import PG_ADMIN, GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
POOL_MAX = 4
STREAMS = 200
ROUNDS = 3


@dataclass
class Outcome:
    response_id: str | None = None
    finished: bool = False  # saw the terminal event
    hung_up: bool = False


def _stream(port: int, hang_up_after: int | None) -> Outcome:
    """A raw-socket client: POST a stream, read frames, close the socket after `hang_up_after` frames
    (None: read to the end). Closing without reading the rest is exactly what a user pressing stop does."""
    body = json.dumps({"model": "m", "input": "tell me a story", "stream": True}).encode()
    outcome = Outcome()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        buffer, frames = b"", 0
        while hang_up_after is None or frames < hang_up_after:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.split(b"\n"):
                if line.startswith(b"data: {") and b'"response.created"' in line and outcome.response_id is None:
                    outcome.response_id = json.loads(line[6:])["response"]["id"]
            frames = buffer.count(b"\ndata: ")
            if b'"type":"response.completed"' in buffer:
                outcome.finished = True
                break
        outcome.hung_up = not outcome.finished
    return outcome


def _metric(gw: GatewayProcess, name: str) -> float:
    text = requests.get(f"{gw.url}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
              or line.startswith(name + "{")]
    return sum(values)


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _upstream_sockets(gw: GatewayProcess, upstream_port: int) -> Counter[str]:
    states: Counter[str] = Counter()
    assert gw.proc is not None
    for worker in psutil.Process(gw.proc.pid).children():
        for conn in worker.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == upstream_port:
                states[conn.status] += 1
    return states


def _database_sessions(gw: GatewayProcess) -> Counter[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute("SELECT state, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY state",
                            (gw.db_name,)).fetchall()
    return Counter({state or "none": count for state, count in rows})


def _ordinary(gw: GatewayProcess, number: int) -> int:
    if number % 4 == 0:
        with requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "hi", "stream": True},
                           timeout=30) as response:
            return response.status_code if '"response.completed"' in response.text else 599
    return requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "hi"}, timeout=30).status_code


def test_a_storm_of_hang_ups_leaves_the_gateway_healthy_and_every_turn_settled():
    upstream = FakeOpenAI()
    # About a second per stream: 40 small chunks, 25 ms apart.
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(40)), chunk_delay=0.025)
    config = f"""
logging: {{format: text, level: warn}}
observability: {{enabled: true, metrics: {{enabled: true}}}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1"}}
models: [{{name: m, provider: openai}}]
"""
    rng = random.Random(8)
    try:
        with GatewayProcess(config, workers=WORKERS, env={"DB_POOL_MAX_SIZE": str(POOL_MAX)}) as gw:
            with ThreadPoolExecutor(max_workers=20) as pool:
                assert set(pool.map(lambda n: _ordinary(gw, n), range(40))) == {200}
            baseline_sockets = _upstream_sockets(gw, upstream.port)

            outcomes: list[Outcome] = []
            for _ in range(ROUNDS):
                # None: read to the end; 0: hang up before the first byte; n: after n frames.
                plan = [rng.choice([None, 0, 1, 2, 3, 5, 8, 13, 21, 30]) for _ in range(STREAMS)]
                with ThreadPoolExecutor(max_workers=STREAMS) as pool:
                    outcomes += list(pool.map(lambda after: _stream(gw.port, after), plan))
                assert _wait_for(lambda: _metric(gw, "gateway_turns_in_flight") == 0), gw.log()[-3000:]

            with ThreadPoolExecutor(max_workers=20) as pool:
                codes = Counter(pool.map(lambda n: _ordinary(gw, n), range(200)))
            assert codes == {200: 200}, (codes, gw.log()[-3000:])

            # Back to baseline: no turn or upstream read left running, no socket or database
            # session left behind in a state nobody will clean up.
            assert _wait_for(lambda: _metric(gw, "gateway_turns_in_flight") == 0)
            assert _wait_for(lambda: _metric(gw, "gateway_upstream_calls_in_flight") == 0), gw.log()[-3000:]
            assert _wait_for(lambda: upstream_streams_open(upstream) == 0)
            sockets = _upstream_sockets(gw, upstream.port)
            assert sockets["CLOSE_WAIT"] == 0, sockets
            # A finished stream's connection goes back to its worker's pool, which keeps up to
            # POOL_SIZE of them open for the next calls; more than that would be a leak.
            assert sockets["ESTABLISHED"] <= max(baseline_sockets["ESTABLISHED"], POOL_SIZE * WORKERS), (sockets,
                                                                                                 baseline_sockets)
            sessions = _database_sessions(gw)
            assert sum(sessions.values()) <= WORKERS * POOL_MAX, sessions
            assert set(sessions) <= {"idle"}, sessions  # nothing stuck mid-query or mid-transaction

            # Every turn a client heard of is settled, and settled truthfully.
            seen = [o for o in outcomes if o.response_id]
            hung_up = [o for o in seen if o.hung_up]
            with psycopg.connect(gw.database_url.replace("postgres://", "postgresql://")) as conn:
                query = "SELECT id, status FROM conversations_app_storedresponse"
                rows: dict[Any, str] = dict(conn.execute(query).fetchall())
            assert {rows[o.response_id] for o in hung_up} == {"incomplete"}
            assert {rows[o.response_id] for o in seen if o.finished} == {"completed"}
            assert "in_progress" not in rows.values()
            print(f"\n{len(outcomes)} streams in {ROUNDS} rounds: {len(hung_up)} hung up after their id, "
                  f"{sum(1 for o in outcomes if o.hung_up and not o.response_id)} before it, "
                  f"{sum(1 for o in outcomes if o.finished)} read to the end; then 200/200 ordinary requests; "
                  f"upstream sockets {dict(sockets)}, database sessions {dict(sessions)}")
    finally:
        upstream.close()


def upstream_streams_open(upstream: FakeOpenAI) -> int:
    """Requests the fake upstream has not finished answering (a leaked read keeps one open)."""
    return sum(1 for recorded in list(upstream.requests) if not recorded.finished.is_set())
