"""What users' traffic does to the WebSocket mode, under real gunicorn: a storm of connections
hanging up at random points (mid-response, on two lanes at once, with and without a closing
handshake), a worker killed with connections open, and Postgres going away and coming back under
an open connection. After each, ordinary requests (HTTP and WebSocket) must all succeed, nothing
may be left running or leaked, and every turn a client heard of is settled truthfully."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from responses_app.providers.http import POOL_SIZE
from tests.e2e.gunicorn import ROOT, GatewayProcess
from tests.e2e.private_postgres import PrivatePostgres, private_postgres  # noqa: F401 - the fixture
from tests.e2e.test_disconnect_storm import (
    _database_sessions,
    _metric,
    _ordinary,
    _upstream_sockets,
    _wait_for,
    upstream_streams_open,
)
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
POOL_MAX = 4
CONNECTIONS = 120


def _config(upstream: FakeOpenAI) -> str:
    return f"""
logging: {{format: text, level: warn}}
observability: {{enabled: true, metrics: {{enabled: true}}}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", retry: {{max_retries: 0}}}}
models: [{{name: m, provider: openai}}]
"""


def _url(gw: GatewayProcess) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/responses"


@dataclass
class Session:
    created: dict[str, str] = field(default_factory=dict)  # response id -> lane
    finished: set[str] = field(default_factory=set)
    hung_up: bool = False


def _session(gw: GatewayProcess, hang_up_after: int | None, lanes: int, polite: bool) -> Session:
    """One client: `lanes` responses at once on their own lanes, each continued once (store: false);
    it hangs up after `hang_up_after` events (None: reads everything), abruptly or with a close frame."""
    outcome = Session()
    ws = connect(_url(gw), open_timeout=20)
    try:
        for lane in range(lanes):
            ws.send(json.dumps({"type": "response.create", "model": "m", "input": "tell me a story", "store": False,
                                "stream_id": f"lane{lane}"}))
        events, pending_continuations = 0, lanes
        while True:
            if hang_up_after is not None and events >= hang_up_after:
                outcome.hung_up = True
                return outcome
            event = json.loads(ws.recv(timeout=30))
            events += 1
            response = event.get("response") or {}
            if event["type"] == "response.created":
                outcome.created[response["id"]] = event["stream_id"]
            elif event["type"] == "response.completed":
                outcome.finished.add(response["id"])
                if pending_continuations:
                    pending_continuations -= 1
                    ws.send(json.dumps({"type": "response.create", "model": "m", "input": "go on", "store": False,
                                        "stream_id": event["stream_id"], "previous_response_id": response["id"]}))
                if len(outcome.finished) == 2 * lanes:
                    return outcome
            elif event["type"] in ("error", "response.failed"):
                raise AssertionError(event)
    finally:
        if polite or not outcome.hung_up:
            ws.close()
        else:
            ws.socket.close()  # gone without a closing handshake, as a killed client is


def _stored(gw: GatewayProcess) -> dict[str, str]:
    with psycopg.connect(gw.database_url.replace("postgres://", "postgresql://")) as conn:
        return dict(conn.execute("SELECT id, status FROM conversations_app_storedresponse").fetchall())


def _one_over_websocket(gw: GatewayProcess) -> str:
    with connect(_url(gw), open_timeout=20) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
        while (event := json.loads(ws.recv(timeout=30)))["type"] not in ("response.completed", "error",
                                                                          "response.failed"):
            pass
        return str(event["type"])


def test_a_storm_of_websocket_hang_ups_leaves_the_gateway_healthy():
    upstream = FakeOpenAI()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(30)), chunk_delay=0.025)
    rng = random.Random(10)
    try:
        with GatewayProcess(_config(upstream), workers=WORKERS, env={"DB_POOL_MAX_SIZE": str(POOL_MAX)}) as gw:
            baseline_sockets = _upstream_sockets(gw, upstream.port)
            plan = [(rng.choice([None, None, 1, 3, 8, 20, 45, 70]), rng.choice([1, 2]), rng.random() < 0.5)
                    for _ in range(CONNECTIONS)]
            with ThreadPoolExecutor(max_workers=60) as pool:
                sessions = list(pool.map(lambda p: _session(gw, *p), plan))
            assert _wait_for(lambda: _metric(gw, "gateway_turns_in_flight") == 0), gw.log()[-3000:]
            assert _wait_for(lambda: _metric(gw, "gateway_websocket_connections") == 0)

            # Ordinary traffic afterwards: every request succeeds.
            with ThreadPoolExecutor(max_workers=20) as pool:
                codes = Counter(pool.map(lambda n: _ordinary(gw, n), range(100)))
                over_ws = Counter(pool.map(lambda _: _one_over_websocket(gw), range(20)))
            assert codes == {200: 100} and over_ws == {"response.completed": 20}, (codes, over_ws)

            # Nothing left running or leaked.
            assert _wait_for(lambda: _metric(gw, "gateway_upstream_calls_in_flight") == 0)
            assert _wait_for(lambda: upstream_streams_open(upstream) == 0)
            sockets = _upstream_sockets(gw, upstream.port)
            assert sockets["CLOSE_WAIT"] == 0, sockets
            assert sockets["ESTABLISHED"] <= max(baseline_sockets["ESTABLISHED"], POOL_SIZE * WORKERS), sockets
            db_sessions = _database_sessions(gw)
            assert sum(db_sessions.values()) <= WORKERS * POOL_MAX and set(db_sessions) <= {"idle"}, db_sessions
            # store: false turns are never written; the 20 ordinary WebSocket turns are, and settled.
            stored = _stored(gw)
            assert "in_progress" not in stored.values()
            hung_up = sum(1 for s in sessions if s.hung_up)
            print(f"\n{CONNECTIONS} connections, {sum(len(s.created) for s in sessions)} responses: {hung_up} "
                  f"hung up mid-way; then 100/100 HTTP and 20/20 WebSocket requests; upstream sockets "
                  f"{dict(sockets)}, database sessions {dict(db_sessions)}")
    finally:
        upstream.close()


def test_a_worker_killed_with_connections_open(capsys: pytest.CaptureFixture[str]):
    upstream = FakeOpenAI()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(100)), chunk_delay=0.05)
    try:
        with GatewayProcess(_config(upstream), workers=1) as gw:
            sockets = [connect(_url(gw)) for _ in range(5)]
            ids = []
            for ws in sockets:
                ws.send(json.dumps({"type": "response.create", "model": "m", "input": "long story"}))
                ids.append(json.loads(ws.recv(timeout=10))["response"]["id"])
            assert gw.proc is not None
            worker = psutil.Process(gw.proc.pid).children()[0]
            os.kill(worker.pid, signal.SIGKILL)
            for ws in sockets:
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(timeout=10)
            # The replacement worker serves at once, and its sweep settles the dead worker's turns.
            assert _wait_for(lambda: _one_over_websocket(gw) == "response.completed", timeout=30)
            assert _wait_for(lambda: all(_stored(gw)[i] == "incomplete" for i in ids), timeout=60), _stored(gw)
    finally:
        upstream.close()


def test_postgres_going_away_under_an_open_connection(private_postgres: PrivatePostgres):  # noqa: F811
    upstream = FakeOpenAI()
    try:
        url = private_postgres.create_database("gateway")
        gw = GatewayProcess(_config(upstream), workers=1, database_url=url)
        subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=gw.env(),
                       check=True)
        with gw, connect(_url(gw)) as ws:
            def create(**extra: Any) -> dict[str, Any]:
                ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi", **extra}))
                while (event := json.loads(ws.recv(timeout=30)))["type"] not in ("response.completed", "error"):
                    pass
                return event

            assert create()["type"] == "response.completed"
            private_postgres.stop()
            started = time.monotonic()
            refused = create()
            assert refused["type"] == "error" and refused["status"] == 503, refused
            assert refused["error"]["code"] == "database_unavailable" and time.monotonic() - started < 5
            # An unstored response needs no database: the socket keeps serving those meanwhile.
            assert create(store=False)["type"] == "response.completed"
            private_postgres.start()
            assert _wait_for(lambda: create()["type"] == "response.completed", timeout=20)
    finally:
        upstream.close()
