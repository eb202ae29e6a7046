"""Two gateway instances behind a real nginx, sharing one Postgres database and one Redis, as a
scaled-out deployment runs: a chain started on one continues on the other, rate limits stay exact
across both, a background response created on one is cancelled through the other, and an instance
killed under load loses no acknowledged turn while the other serves on and settles what it left.

Requests are pinned to an instance by addressing it directly, or go through nginx, which balances
round robin over both (its access log says which instance answered each one)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests
from openai import BadRequestError, OpenAI

from tests.contract import validate
from tests.e2e.gunicorn import GatewayProcess
from tests.e2e.nginx import Nginx
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.identity.test_cross_process import burst, create_key

pytestmark = [pytest.mark.e2e]

REDIS_URL = "redis://127.0.0.1:6379/0"


def _config(fast: FakeOpenAI, slow: FakeOpenAI, prefix: str) -> str:
    # `m` answers as scripted, `slow` streams for as long as a test needs, `demo` at once; limits are
    # generous except for keys created with their own --rpm.
    return f"""
logging: {{format: text, level: warn}}
auth: {{enabled: true}}
rate_limit: {{enabled: true, requests_per_minute: 100000, redis_key_prefix: "{prefix}"}}
providers:
  fast: {{type: openai, api_key: k, endpoint: "{fast.url}/v1", retry: {{max_retries: 0}}}}
  slow: {{type: openai, api_key: k, endpoint: "{slow.url}/v1", retry: {{max_retries: 0}}}}
  demo: {{type: demo}}
models: [{{name: m, provider: fast}}, {{name: slow, provider: slow}}, {{name: demo, provider: demo}}]
"""


@dataclass
class Deployment:
    a: GatewayProcess
    b: GatewayProcess
    lb: Nginx
    key: str

    def sdk(self, base_url: str) -> OpenAI:
        return OpenAI(base_url=base_url, api_key=self.key, max_retries=0, _strict_response_validation=True)

    def served_by(self, method: str, path: str, *, at_least: int = 0) -> list[int]:
        """The instance port that finally answered each such request through nginx, in order.
        nginx logs a request after its client has the answer, so a test that counts what it just
        sent waits (up to 5 s) for `at_least` lines."""
        deadline = time.monotonic() + 5
        while True:
            served = [ports[-1] for m, p, _, ports in self.lb.served() if (m, p) == (method, path) and ports]
            if len(served) >= at_least or time.monotonic() > deadline:
                return served
            time.sleep(0.05)


@contextmanager
def deployment(fast: FakeOpenAI, slow: FakeOpenAI, workers: int = 2) -> Iterator[Deployment]:
    prefix = f"test:multi:{secrets.token_hex(4)}:"
    config = _config(fast, slow, prefix)
    env = {"REDIS_URL": REDIS_URL}
    try:
        with ExitStack() as stack:
            # B shares A's database (A creates and drops it); both share Redis.
            a = stack.enter_context(GatewayProcess(config, workers=workers, env=env))
            b = stack.enter_context(GatewayProcess(config, workers=workers, env=env, database_url=a.database_url))
            lb = stack.enter_context(Nginx([a.port, b.port]))
            yield Deployment(a, b, lb, create_key(a))
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def fast() -> Iterator[FakeOpenAI]:
    upstream = FakeOpenAI()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeOpenAI]:
    upstream = FakeOpenAI()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def shared(fast: FakeOpenAI, slow: FakeOpenAI) -> Iterator[Deployment]:
    with deployment(fast, slow) as deployed:
        yield deployed


def _wire(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


def _transcript(upstream_request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every message a Chat Completions request carried."""
    out = []
    for message in upstream_request["messages"]:
        content = message.get("content")
        text = content if isinstance(content, str) else "".join(part.get("text", "") for part in content or [])
        out.append((message["role"], text))
    return out


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_chain_started_on_one_instance_continues_on_the_other(shared: Deployment, fast: FakeOpenAI):
    fast.reset()
    fast.default_step = Reply()
    fast.script(Reply(text="Nice to meet you, Ada."), Reply(text="You are Ada."), Reply(text="Ada, again."),
                Reply(text="Still Ada."), Reply(text="Ada, over a socket."))
    on_a, on_b, through = (shared.sdk(gw) for gw in (shared.a.base_url, shared.b.base_url, shared.lb.base_url))

    first = on_a.responses.create(model="m", input="My name is Ada.")
    second = on_b.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    # Through nginx, streamed (its buffering off) then JSON: round robin sends them to different instances.
    events = list(through.responses.create(model="m", input="Say it again.", previous_response_id=second.id,
                                           stream=True))
    assert events[-1].type == "response.completed"
    third = events[-1].response
    fourth = through.responses.create(model="m", input="And once more.", previous_response_id=third.id)
    for event in events:
        validate("ResponseStreamEvent", _wire(event))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert set(shared.served_by("POST", "/v1/responses", at_least=2)) == {shared.a.port, shared.b.port}

    # Each upstream call got the whole chain, whichever instance stored its turns.
    assert _transcript(fast.requests[-1].json) == [
        ("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"), ("assistant", "You are Ada."),
        ("user", "Say it again."), ("assistant", "Ada, again."),
        ("user", "And once more.")]
    # Every instance reads every turn.
    for client in (on_a, on_b, through):
        got = client.responses.retrieve(fourth.id)
        validate("Response", _wire(got))
        assert (got.output_text, got.previous_response_id) == ("Still Ada.", third.id)
        items = client.responses.input_items.list(fourth.id)
        assert [_wire(item)["content"][0]["text"] for item in items.data] == ["And once more."]

    # The WebSocket mode through nginx (Upgrade passed on): the chain goes on over a socket.
    with through.responses.connect() as connection:
        connection.response.create(model="m", input="Over a socket.", previous_response_id=fourth.id)
        over_socket: list[Any] = []
        for server_event in connection:
            over_socket.append(server_event)
            if server_event.type in ("response.completed", "response.failed", "error"):
                break
    assert over_socket[-1].type == "response.completed", over_socket[-1]
    assert ("GET", "/v1/responses", 101) in [(m, p, status) for m, p, status, _ in shared.lb.served()]
    assert _transcript(fast.requests[-1].json)[-3:] == [
        ("user", "And once more."), ("assistant", "Still Ada."), ("user", "Over a socket.")]
    assert on_b.responses.retrieve(over_socket[-1].response.id).output_text == "Ada, over a socket."


def test_a_chain_kept_in_one_instance_obeys_what_the_other_did(shared: Deployment, fast: FakeOpenAI):
    """Each worker keeps the chains it stored in memory (conversations_app.chain_memory), but
    whether one may still be continued is asked of Postgres every time: a response deleted through
    the other instance, or asked for by another owner, is refused where it is kept."""
    fast.reset()
    fast.default_step = Reply(text="Noted.")
    on_a, on_b = shared.sdk(shared.a.base_url), shared.sdk(shared.b.base_url)
    other_owner = OpenAI(base_url=shared.a.base_url, api_key=create_key(shared.a, "--owner", "other-team"),
                         max_retries=0, _strict_response_validation=True)
    first = on_a.responses.create(model="m", input="one")
    second = on_a.responses.create(model="m", input="two", previous_response_id=first.id)
    third = on_a.responses.create(model="m", input="three", previous_response_id=second.id)
    assert _transcript(fast.requests[-1].json) == [("user", "one"), ("assistant", "Noted."), ("user", "two"),
                                                  ("assistant", "Noted."), ("user", "three")]
    with pytest.raises(BadRequestError) as refused:
        other_owner.responses.create(model="m", input="mine now", previous_response_id=third.id)
    assert refused.value.code == "previous_response_not_found"

    on_b.responses.delete(third.id)
    for _ in range(4):  # whichever of A's workers keeps it
        with pytest.raises(BadRequestError) as refused:
            on_a.responses.create(model="m", input="four", previous_response_id=third.id)
        assert refused.value.code == "previous_response_not_found"
    # Its predecessor can still be continued: a branch, whose context does not hold the deleted turn.
    on_a.responses.create(model="m", input="two again", previous_response_id=second.id)
    assert _transcript(fast.requests[-1].json)[-1] == ("user", "two again")
    assert len(_transcript(fast.requests[-1].json)) == 5


def test_rate_limits_stay_exact_across_both_instances(shared: Deployment, fast: FakeOpenAI):
    fast.reset()
    fast.default_step = Reply()
    limit, count = 5, 24
    key = create_key(shared.a, "--rpm", str(limit))
    before = len(shared.served_by("POST", "/v1/responses"))
    responses = burst([shared.lb.url], key, count)
    assert sorted(r.status_code for r in responses) == [200] * limit + [429] * (count - limit)
    # One bucket in Redis: each admission saw a different remaining count, whichever instance served it.
    admitted = [r for r in responses if r.status_code == 200]
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted) == list(range(limit))
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"rate_limit_exceeded"}
    served = shared.served_by("POST", "/v1/responses", at_least=before + count)[before:]
    assert len(served) == count and set(served) == {shared.a.port, shared.b.port}
    # Pinned to each instance, the same key finds the same empty bucket.
    for gw in (shared.a, shared.b, shared.a, shared.b):
        refused = requests.post(f"{gw.base_url}/responses", json={"model": "m", "input": "more"},
                                headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_background_response_created_on_one_is_cancelled_through_the_other(shared: Deployment, slow: FakeOpenAI):
    slow.reset()
    slow.default_step = Reply(text=" ".join(f"w{i}" for i in range(100)), chunk_delay=0.1)
    on_a, on_b, through = (shared.sdk(gw) for gw in (shared.a.base_url, shared.b.base_url, shared.lb.base_url))
    created = on_a.responses.create(model="slow", input="a long job", background=True)
    _wait(lambda: len(slow.requests) == 1)
    followed: list[Any] = []
    follower = threading.Thread(target=lambda: followed.extend(through.responses.retrieve(created.id, stream=True)),
                                daemon=True)
    follower.start()
    time.sleep(0.5)
    asked = time.monotonic()
    cancelled = on_b.responses.cancel(created.id)
    # Instance A, which runs the turn, drops its upstream call.
    assert slow.requests[0].client_disconnected.wait(5)
    stopped = time.monotonic() - asked
    # Checked after the clock stops: the first validation in a process compiles the OpenAPI schema
    # (seconds), which is the test's time, not the gateway's.
    validate("Response", _wire(cancelled))
    assert cancelled.status == "cancelled"
    follower.join(10)
    assert not follower.is_alive()  # the follower (on either instance, through nginx) ended too
    assert followed[0].type == "response.created"
    assert [e.sequence_number for e in followed] == list(range(len(followed)))
    time.sleep(0.5)
    for client in (on_a, on_b, through):
        after = client.responses.retrieve(created.id)
        assert after.status == "cancelled" and len(after.output_text.split()) < 100
    print(f"\nbackground response on instance A cancelled through instance B: upstream call dropped in {stopped:.2f} s")
    assert stopped < 2.0


# --- an instance killed under load -------------------------------------------------------------

@dataclass
class Outcome:
    started: float
    kind: str  # "json" or "stream"
    status: int | None  # HTTP status; None when the connection failed
    response_id: str | None  # the id the client saw (a stream's response.created, a JSON body's id)
    acknowledged: bool  # a 200 JSON response, or a stream that reached response.completed
    text: str


def _turn(session: requests.Session, url: str, key: str, kind: str, previous: str | None) -> Outcome:
    body: dict[str, Any] = {"model": "m", "input": f"turn at {time.monotonic():.3f}", "stream": kind == "stream"}
    if previous:
        body["previous_response_id"] = previous
    started = time.monotonic()
    seen: str | None = None
    try:
        answer = session.post(f"{url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"},
                               timeout=30, stream=kind == "stream")
        if kind == "json" or answer.status_code != 200:
            data = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            ok = answer.status_code == 200
            return Outcome(started, kind, answer.status_code, data.get("id") if ok else None, ok,
                           data["output"][0]["content"][0]["text"] if ok else "")
        text = ""
        for line in answer.iter_lines():
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "response.created":
                seen = event["response"]["id"]
            elif event["type"] == "response.output_text.delta":
                text += event["delta"]
            elif event["type"] == "response.completed":
                return Outcome(started, kind, 200, seen, True, text)
        return Outcome(started, kind, 200, seen, False, text)
    except (requests.RequestException, ValueError):
        return Outcome(started, kind, None, seen, False, "")


def _load(url: str, key: str, stop: threading.Event, outcomes: list[Outcome], index: int) -> None:
    """One client: JSON and streamed turns in turn, each continuing its own chain from its last
    acknowledged turn (so chains cross from the killed instance to the survivor)."""
    session = requests.Session()
    previous: str | None = None
    count = 0
    while not stop.is_set():
        outcome = _turn(session, url, key, "stream" if (count + index) % 2 else "json", previous)
        outcomes.append(outcome)
        if outcome.acknowledged:
            previous = outcome.response_id
        elif outcome.status is None:
            session = requests.Session()  # the connection broke: a new one, as clients do
        count += 1


def _status(gw: GatewayProcess, key: str, response_id: str) -> tuple[str, str]:
    answer = requests.get(f"{gw.base_url}/responses/{response_id}", headers={"Authorization": f"Bearer {key}"},
                          timeout=10)
    if answer.status_code != 200:
        return f"http {answer.status_code}", ""
    data = answer.json()
    text = "".join(part["text"] for item in data["output"] for part in item.get("content", []) if "text" in part)
    return data["status"], text


@pytest.mark.slow
def test_an_instance_killed_under_load_loses_no_acknowledged_turn(fast: FakeOpenAI, slow: FakeOpenAI):
    fast.reset()
    fast.default_step = Reply(text=" ".join(f"w{i}" for i in range(10)), chunk_delay=0.05)  # ~0.5 s turns
    slow.reset()
    slow.default_step = Reply(text=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.2)  # ~40 s streams
    clients = 8
    with deployment(fast, slow) as d:
        # Streams pinned to A, still running when it dies: read up to their response.created.
        pinned: list[str] = []
        pinned_answers: list[tuple[requests.Response, Iterator[bytes]]] = []
        for _ in range(4):
            answer = requests.post(f"{d.a.base_url}/responses", json={"model": "slow", "input": "long", "stream": True},
                                   headers={"Authorization": f"Bearer {d.key}"}, stream=True, timeout=30)
            # The line iterator is kept with its answer: dropped, it is closed whenever the garbage
            # collector gets to it, and closing it mid-body closes the connection, so A saw its
            # client leave and settled the stream itself before the kill (a flake under load).
            lines = answer.iter_lines()
            for line in lines:
                if line.startswith(b"data: ") and b'"response.created"' in line:
                    pinned.append(json.loads(line[6:])["response"]["id"])
                    break
            pinned_answers.append((answer, lines))
        assert len(pinned) == 4

        outcomes: list[Outcome] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(d.lb.url, d.key, stop, outcomes, i), daemon=True)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(3.0)
        killed = time.monotonic()
        before_kill = len(d.served_by("POST", "/v1/responses"))
        d.a.kill()  # master and workers, SIGKILL, at once
        time.sleep(5.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        for answer, _lines in pinned_answers:
            answer.close()

        served = d.served_by("POST", "/v1/responses")
        # Before the kill nginx spread the load over both instances; after it only B answered.
        assert set(served[:before_kill]) == {d.a.port, d.b.port}
        after = [o for o in outcomes if o.started > killed + 1.0]
        assert after and all(o.acknowledged for o in after), [(o.kind, o.status) for o in after if not o.acknowledged]
        acknowledged = [o for o in outcomes if o.acknowledged]
        assert any(o.started < killed for o in acknowledged)

        # Every acknowledged turn is stored completed, with what its client got, read from the survivor.
        with ThreadPoolExecutor(16) as pool:
            stored = list(pool.map(lambda o: _status(d.b, d.key, o.response_id), acknowledged))
        lost = [(o.response_id, s) for o, s in zip(acknowledged, stored, strict=True) if s != ("completed", o.text)]
        assert not lost, lost

        # Turns A was running when it died (the pinned streams, and load streams cut after their
        # response.created) are settled by B's sweep: A's leases belong to processes gone from this host.
        unsettled = pinned + [o.response_id for o in outcomes if o.response_id and not o.acknowledged]
        deadline = time.monotonic() + 60
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = {rid: _status(d.b, d.key, rid)[0] for rid in unsettled}
            if "in_progress" not in statuses.values():
                break
            time.sleep(0.5)
        settled_after = time.monotonic() - killed
        assert {statuses[rid] for rid in pinned} == {"incomplete"}, (statuses, d.b.log()[-3000:])
        assert set(statuses.values()) <= {"completed", "incomplete"}, statuses
        assert "settled" in d.b.log() and "dead workers" in d.b.log()
        assert requests.get(f"{d.b.url}/ready", timeout=5).status_code == 200

        failed = [o for o in outcomes if not o.acknowledged]
        last_failure = max((o.started - killed for o in failed), default=0.0)
        print(f"\n{clients} clients through nginx, instance A SIGKILLed (master and workers) after 3 s: "
              f"{len(outcomes)} requests, {len(acknowledged)} acknowledged, all stored completed; "
              f"{len(failed)} failed ({', '.join(sorted({f'{o.kind} {o.status}' for o in failed}))}), the last "
              f"started {last_failure:+.2f} s from the kill; {len(after)} started more than 1 s after it, all "
              f"served by B; {len(unsettled)} turns A was running ({len(pinned)} pinned streams) settled "
              f"incomplete or completed by B's sweep {settled_after:.1f} s after the kill")
