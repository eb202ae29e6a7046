"""Hundreds of slow streams through one 2-worker gunicorn with API keys: all complete, and neither OS
threads nor Postgres connections grow with the number of open streams. The streams arrive at once,
so each worker's key cache is cold and every one of them looks its key up in Postgres first: a
stream that kept that connection while it runs would hold the pool for seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests

from tests.e2e.gunicorn import PG_ADMIN, ROOT, GatewayProcess
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAMS = 300
POOL_MAX = 4
WORKERS = 2


def _stream_once(url: str, key: str) -> str:
    body = {"model": "gpt-test", "input": "tell me slowly", "stream": True}
    with requests.post(f"{url}/v1/responses", json=body, stream=True, timeout=60,
                       headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        last = None
        for line in response.iter_lines():
            if line.startswith(b"data: "):
                last = json.loads(line[6:])["type"]
        return last or ""


def _worker_threads(master_pid: int) -> list[int]:
    counts = []
    for child in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        counts.append(int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))))
    return counts


def test_300_slow_streams_complete_with_bounded_connections_and_threads():
    upstream = FakeOpenAI()
    # About 3 s per stream: 10 chunks, 0.3 s apart.
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(10)), chunk_delay=0.3)
    config = f"""
logging: {{format: text, level: warn}}
auth: {{enabled: true}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", read_timeout: 30}}
models: [{{name: gpt-test, provider: openai}}]
"""
    peak = {"pg": 0, "threads": 0}
    stop = threading.Event()
    try:
        with GatewayProcess(config, workers=WORKERS, env={"DB_POOL_MAX_SIZE": str(POOL_MAX)}) as gw:
            create_key = [sys.executable, "manage.py", "create_api_key", "--name", "streams", "--owner", "acme"]
            key = subprocess.run(create_key, cwd=ROOT, env=gw.env(), check=True, capture_output=True,
                                 text=True).stdout.strip()

            def watch() -> None:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    while not stop.is_set():
                        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                           (gw.db_name,)).fetchone()
                        assert row is not None and gw.proc is not None
                        peak["pg"] = max(peak["pg"], row[0])
                        peak["threads"] = max([peak["threads"], *_worker_threads(gw.proc.pid)])
                        time.sleep(0.1)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=STREAMS) as pool:
                results = list(pool.map(lambda _: _stream_once(gw.url, key), range(STREAMS)))
            elapsed = time.monotonic() - started
            stop.set()
            watcher.join()
            completed = results.count("response.completed")
            with psycopg.connect(gw.database_url) as conn:
                # A row's xmin is the transaction that wrote its last version: the responses' is
                # their settling write, their input items' the opening write.
                settled = conn.execute("SELECT count(*), count(DISTINCT xmin::text) "
                                       "FROM conversations_app_storedresponse").fetchone()
                opened = conn.execute("SELECT count(*), count(DISTINCT xmin::text) FROM conversations_app_item "
                                      "WHERE kind = 0").fetchone()
            print(f"\n{completed}/{STREAMS} streams completed in {elapsed:.1f}s; peak Postgres connections "
                  f"{peak['pg']} (bound {WORKERS * (POOL_MAX + 1)}); peak OS threads per worker {peak['threads']}; "
                  f"opening writes in {opened} transactions, settling writes in {settled}")
            assert completed == STREAMS, gw.log()[-3000:]
            # Each worker's pool, and its key cache's one listening connection (identity_app).
            assert peak["pg"] <= WORKERS * (POOL_MAX + 1)
            # gevent: open streams are greenlets, not threads (a handful of helper threads only).
            assert peak["threads"] < 20
            # Concurrent, not serialised: 300 x 3 s streams finish in a small multiple of one stream.
            assert elapsed < 60
            # Group commit (conversations_app.group_commit): turn writes that wait at the same time
            # share a transaction, where each used to take one of its own. How many share depends on
            # how busy the worker is (here 227-284 transactions for 300 writes; under 1,000 streams
            # on 2 cores, far fewer): only the sharing is asserted.
            assert settled is not None and opened is not None
            assert settled[0] == opened[0] == STREAMS
            assert settled[1] < STREAMS and opened[1] < STREAMS
    finally:
        stop.set()
        upstream.close()
