"""Postgres restarts and outages under a gunicorn-run gateway (2 gevent workers), seen over HTTP.

Each test owns a private Postgres (tests/e2e/private_postgres.py) it can stop and restart:
- a restart while idle costs no request an error (pooled connections are checked before use);
- while Postgres is down, API calls get a fast 503 `database_unavailable` with Retry-After and
  /ready a fast 503, and both recover without restarting the gateway;
- a restart under concurrent load gives only 503s while it lasts (never a 500) and no error after.

The measured figures (slowest 503, slowest /ready, time to recover) are printed past pytest's
capture, so every run shows them; the promises are asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.e2e.gunicorn import ROOT, GatewayProcess
from tests.e2e.private_postgres import PrivatePostgres, private_postgres  # noqa: F401 - the fixture
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = pytest.mark.e2e

DEMO_CONFIG = """
logging: {format: text, level: warn}
providers: {demo: {type: demo}}
models: [{name: demo, provider: demo}]
"""

# The promises under test (README, "Database outages"): a 503 after DB_POOL_TIMEOUT (1.5 s) plus the
# request's own time, which on two cores shared with two other test workers was 2.0-2.8 s. Well
# short of what the bound is there to catch: waiting out DB_POOL_BUSY_TIMEOUT (10 s), or hanging.
API_503_WITHIN = 4.0
READY_WITHIN = 1.0


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    # The last SSE event type for streams, the error code for error bodies.
    detail: str = ""
    retry_after: str | None = None


class Client:
    """The four kinds of API call the tests mix, each timed; no call raises on an HTTP status."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.session = requests.Session()
        self.known_ids: list[str] = []
        self._lock = threading.Lock()

    def _remember(self, response_id: str) -> None:
        with self._lock:
            self.known_ids.append(response_id)

    def _some_id(self) -> str:
        with self._lock:
            return self.known_ids[len(self.known_ids) // 2]

    def call(self, kind: str) -> Outcome:
        started = time.monotonic()
        response = self._send(kind)
        detail = ""
        if kind == "stream" and response.status_code == 200:
            detail = self._last_event(response)
        else:
            body = response.json()
            if response.status_code >= 400:
                detail = str(body.get("error", {}).get("code"))
            elif kind == "json":
                self._remember(body["id"])
        return Outcome(kind, response.status_code, time.monotonic() - started, detail,
                       response.headers.get("Retry-After"))

    def _send(self, kind: str) -> requests.Response:
        base = self.gw.base_url
        if kind == "json":
            return requests.post(f"{base}/responses", json={"model": "demo", "input": "hi"}, timeout=15)
        if kind == "stream":
            return requests.post(f"{base}/responses", json={"model": "demo", "input": "hi", "stream": True},
                                 stream=True, timeout=15)
        if kind == "follow_up":
            return requests.post(f"{base}/responses", json={"model": "demo", "input": "and?",
                                                             "previous_response_id": self._some_id()}, timeout=15)
        if kind == "get":
            return requests.get(f"{base}/responses/{self._some_id()}", timeout=15)
        if kind == "input_items":
            return requests.get(f"{base}/responses/{self._some_id()}/input_items", timeout=15)
        raise ValueError(kind)

    def _last_event(self, response: requests.Response) -> str:
        last: dict[str, object] = {}
        with response:
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    last = json.loads(line[6:])
        if last.get("type") == "response.completed":
            self._remember(str(last["response"]["id"]))  # type: ignore[index]
        return str(last.get("type", ""))

    def ready(self) -> tuple[int, float, dict[str, object]]:
        started = time.monotonic()
        response = requests.get(f"{self.gw.url}/ready", timeout=10)
        return response.status_code, time.monotonic() - started, response.json()


MIX = ["json", "stream", "get", "input_items", "follow_up"]


def mixed(count: int) -> list[str]:
    return [MIX[i % len(MIX)] for i in range(count)]


@pytest.fixture
def gateway(private_postgres: PrivatePostgres) -> Iterator[tuple[GatewayProcess, PrivatePostgres, Client]]:  # noqa: F811 - the fixture
    url = private_postgres.create_database("gateway")
    gw = GatewayProcess(DEMO_CONFIG, workers=2, database_url=url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=gw.env(), check=True)
    with gw:
        client = Client(gw)
        yield gw, private_postgres, client


def warm_up(client: Client) -> None:
    """Enough concurrent traffic that both workers hold several pooled connections."""
    seeds = [client.call("json") for _ in range(3)]
    for outcome in seeds + run_concurrently(client, mixed(40), threads=8):
        assert outcome.status == 200, outcome


def run_concurrently(client: Client, kinds: list[str], threads: int) -> list[Outcome]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(client.call, kinds))


Say = Callable[[str], None]


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Say:
    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n    {line}", end="")

    return emit


def report(say: Say, title: str, outcomes: list[Outcome]) -> str:
    by_status: dict[int, int] = {}
    for outcome in outcomes:
        by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
    slowest = max((o.seconds for o in outcomes), default=0.0)
    line = f"{title}: {len(outcomes)} requests, statuses {by_status}, slowest {slowest:.3f} s"
    say(line)
    return line


def test_a_restart_while_idle_costs_no_request_an_error(gateway, say):
    gw, pg, client = gateway
    warm_up(client)
    pg.restart()
    outcomes = [client.call(kind) for kind in mixed(40)]
    summary = report(say, "idle restart, 40 sequential requests after", outcomes)
    failures = [o for o in outcomes if o.status != 200 or (o.kind == "stream" and o.detail != "response.completed")]
    assert not failures, f"{summary}\n{failures}\n{gw.log()[-3000:]}"


def assert_fast_503(outcome: Outcome) -> None:
    assert outcome.status == 503, outcome
    assert outcome.detail == "database_unavailable", outcome
    assert outcome.retry_after, outcome
    assert outcome.seconds < API_503_WITHIN, outcome


def test_while_postgres_is_down_calls_fail_fast_with_503_and_recover_without_a_restart(gateway, say):
    gw, pg, client = gateway
    warm_up(client)
    pg.stop()
    down_started = time.monotonic()

    # Everything that must read or write before it can answer.
    outcomes = [client.call(kind) for kind in ["json", "get", "input_items", "follow_up"] * 2]
    report(say, "down: API calls", outcomes)
    for outcome in outcomes:
        assert_fast_503(outcome)
    one = requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "hi"}, timeout=15)
    assert one.json()["error"] == {"message": one.json()["error"]["message"], "type": "server_error",
                                   "param": None, "code": "database_unavailable"}
    assert one.headers.get("x-should-retry") != "false"
    # A stream writes its turn before its first byte (and before calling the upstream): a 503 too.
    assert_fast_503(client.call("stream"))

    probes = [client.ready() for _ in range(5)]
    slowest_ready = max(seconds for _, seconds, _ in probes)
    say(f"down: /ready x5, slowest {slowest_ready:.3f} s, checks.database={probes[0][2]['checks']['database']!r}")
    for status, seconds, body in probes:
        assert status == 503 and body["status"] == "not_ready", body
        assert str(body["checks"]["database"]).startswith("unhealthy"), body
        assert seconds < READY_WITHIN, (seconds, body)
    down_for = time.monotonic() - down_started

    pg.start()
    back = time.monotonic()
    first = client.call("json")
    while first.status != 200 and time.monotonic() - back < 10:
        first = client.call("json")
    recovered_in = time.monotonic() - back
    say(f"down for {down_for:.1f} s; first success {recovered_in:.3f} s after Postgres was back")
    assert first.status == 200, first

    outcomes = [client.call(kind) for kind in mixed(20)]
    report(say, "back up: 20 sequential requests", outcomes)
    assert all(o.status == 200 for o in outcomes), outcomes
    status, seconds, body = client.ready()
    say(f"back up: /ready {status} in {seconds:.3f} s")
    assert status == 200 and body["checks"]["database"] == "healthy", body
    assert seconds < READY_WITHIN


@dataclass
class Timed:
    started: float
    outcome: Outcome


def load(client: Client, stop: threading.Event, threads: int) -> tuple[list[Timed], Callable[[], None]]:
    """Concurrent mixed traffic until `stop` is set; returns the (growing) results and a join."""
    results: list[Timed] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            started = time.monotonic()
            try:
                outcome = client.call(MIX[i % len(MIX)])
            except requests.RequestException as exc:
                # A broken connection or a timeout is as bad as a 500: record it as one.
                outcome = Outcome(MIX[i % len(MIX)], 0, time.monotonic() - started, repr(exc))
            with lock:
                results.append(Timed(started, outcome))
            i += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()

    def join() -> None:
        for thread in pool:
            thread.join(timeout=30)

    return results, join


def restart(pg: PrivatePostgres) -> None:
    pg.restart()


def stop_for_3_seconds(pg: PrivatePostgres) -> None:
    pg.stop()
    time.sleep(3)
    pg.start()


@pytest.mark.parametrize("outage", [restart, stop_for_3_seconds], ids=lambda f: f.__name__)
def test_an_outage_under_load_gives_only_503s_while_down_and_no_error_after(gateway, say, outage):
    gw, pg, client = gateway
    warm_up(client)
    stop = threading.Event()
    results, join = load(client, stop, threads=8)
    try:
        time.sleep(2)
        down = time.monotonic()
        outage(pg)
        back = time.monotonic()
        time.sleep(5)
    finally:
        stop.set()
        join()

    before = [t.outcome for t in results if t.started + t.outcome.seconds < down]
    during = [t.outcome for t in results if t.started < back and t.started + t.outcome.seconds >= down]
    after = [t.outcome for t in results if t.started >= back]
    say(f"{outage.__name__}: Postgres away for {back - down:.3f} s")
    report(say, "load before", before)
    report(say, "load overlapping the outage", during)
    summary = report(say, "load after Postgres was back", after)

    def ok(outcome: Outcome) -> bool:
        return outcome.status == 200 and (outcome.kind != "stream" or outcome.detail == "response.completed")

    assert before and after and all(ok(o) for o in before), before
    # While it is away: a 200, a fast 503 with Retry-After, or a stream that ends failed. Never a 500.
    for outcome in during:
        if outcome.status == 503:
            assert_fast_503(outcome)
        else:
            assert outcome.status == 200, outcome
    bad = [o for o in after if not ok(o)]
    assert not bad, f"{summary}\n{bad}\n{gw.log()[-3000:]}"


AUTH_CONFIG = DEMO_CONFIG + "auth: {enabled: true}\n"


def test_api_keys_remembered_by_the_workers_are_still_revoked_at_once_after_a_restart(
        private_postgres: PrivatePostgres, say: Say) -> None:  # noqa: F811 - the fixture
    """The workers remember active keys and listen for changes on a connection of their own
    (identity_app.key_cache). A restart closes that connection: a revocation made after it must
    still be refused by every worker on the next request, both before the workers listen again
    (they read rows meanwhile) and after (the notification)."""
    url = private_postgres.create_database("gateway")
    gw = GatewayProcess(AUTH_CONFIG, workers=2, database_url=url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=gw.env(), check=True)

    def new_key() -> tuple[str, str]:
        done = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", "k", "--owner", "acme"],
                              cwd=ROOT, env=gw.env(), check=True, capture_output=True, text=True)
        key = done.stdout.strip()
        return key, "_".join(key.split("_")[:2])  # its visible prefix (gwk_1a2b3c4d) names it in SQL

    def statuses(key: str, count: int = 16) -> list[int]:
        def one(_: int) -> int:
            return requests.post(f"{gw.base_url}/responses", json={"model": "demo", "input": "hi"},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=15).status_code
        with ThreadPoolExecutor(4) as pool:  # spread over both workers
            return list(pool.map(one, range(count)))

    def revoke(prefix: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            done = conn.execute("UPDATE identity_app_apikey SET revoked_at = now() WHERE prefix = %s", (prefix,))
            assert done.rowcount == 1

    with gw:
        first, first_prefix = new_key()
        second, second_prefix = new_key()
        assert set(statuses(first) + statuses(second)) == {200}  # both remembered by both workers
        private_postgres.restart()
        after = statuses(first)
        assert set(after) == {200}, f"{after}\n{gw.log()[-3000:]}"
        revoke(first_prefix)  # the workers are not listening again yet (they retry after 5 s)
        assert set(statuses(first)) == {401}, gw.log()[-3000:]
        time.sleep(6)  # now they listen again
        assert set(statuses(second, 24)) == {200}  # remembered again
        revoke(second_prefix)
        refused = statuses(second, 24)
        assert set(refused) == {401}, f"{refused}\n{gw.log()[-3000:]}"
        say(f"after the restart: {len(after)} calls with a remembered key 200; revoked before and after the "
            "workers listened again: every call 401")


BURST = 200


def test_a_restart_under_a_burst_of_streams_leaves_no_turn_half_written(
        private_postgres: PrivatePostgres, say: Say) -> None:  # noqa: F811 - the fixture
    """200 streams through one worker, so their writes travel in group commits
    (conversations_app.group_commit), with Postgres stopped (immediate) while the first hundred
    near their settles and the second hundred arrive, and started 2 s later: batches lose
    their connection and batches find none. Every stream gets a 200 or a 503, never a 500; a 200
    ends with a terminal event; every row written settles once Postgres is back (the settles it
    refused are retried); ordinary streams all succeed after."""
    upstream = FakeOpenAI()
    upstream.default_step = Reply(text=" ".join(f"w{i}" for i in range(10)), chunk_delay=0.1)  # about 1 s
    config = f"""
logging: {{format: text, level: warn}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{upstream.url}/v1", read_timeout: 30}}
models: [{{name: gpt-test, provider: openai}}]
"""
    url = private_postgres.create_database("gateway")
    gw = GatewayProcess(config, workers=1, database_url=url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=gw.env(), check=True)

    def stream(_: int) -> tuple[int, str]:
        with requests.post(f"{gw.base_url}/responses", json={"model": "gpt-test", "input": "hi", "stream": True},
                           stream=True, timeout=60) as response:
            if response.status_code != 200:
                return response.status_code, str(response.json().get("error", {}).get("code"))
            last = ""
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    last = json.loads(line[6:])["type"]
            return 200, last

    try:
        with gw:
            with ThreadPoolExecutor(BURST) as pool:
                # Half the burst opens its turns, and Postgres goes away as they near their settles;
                # the other half arrives while it is away; it comes back while the first half ends.
                burst = [pool.submit(stream, i) for i in range(BURST // 2)]
                time.sleep(0.7)
                private_postgres.stop("immediate")
                burst += [pool.submit(stream, i) for i in range(BURST // 2)]
                time.sleep(2.0)
                private_postgres.start()
                outcomes = [future.result() for future in burst]
            after = [stream(i) for i in range(10)]
            import psycopg

            deadline = time.monotonic() + 20
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    row = conn.execute("SELECT count(*) FILTER (WHERE status = 'in_progress'), count(*) "
                                       "FROM conversations_app_storedresponse").fetchone()
                    assert row is not None
                    if row[0] == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
            log = gw.log()
    finally:
        upstream.close()
    counts: dict[tuple[int, str], int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    say(f"a restart under {BURST} streams: {counts}; then {after}; rows {row[1]}, left in progress {row[0]}")
    assert all(status in (200, 503) for status, _ in outcomes), counts
    assert all(last in ("response.completed", "response.failed") for status, last in outcomes if status == 200), counts
    assert after == [(200, "response.completed")] * 10, log[-3000:]
    assert row[0] == 0, log[-3000:]
    # The refused settles are logged as warnings, with their tracebacks; nothing went unhandled.
    assert "unhandled error" not in log and "Error handling request" not in log, log[-5000:]
