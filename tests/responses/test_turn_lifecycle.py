"""A turn exists from its first byte and always ends settled: in_progress rows, hang-ups, shutdowns,
truncated upstreams, keep-alives during silences, and the sweep that settles what dead workers left."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from conversations_app.models import StoredResponse, WorkerLease
from responses_app import worker_lifecycle
from responses_app.cancellation import SHUTDOWN, live_turns
from tests.conftest import sse_events, sse_frames
from tests.fakes.openai_upstream import Raw, Reply


def _frames(response: Any) -> Any:
    return sse_frames(response.streaming_content)


def _data(frame: bytes) -> dict[str, Any]:
    return json.loads(frame.split(b"data: ", 1)[1])


def test_a_streamed_turn_exists_in_progress_once_the_client_has_its_id(api, fake_openai):
    fake_openai.script(Reply(text="slow answer here", chunk_delay=0.2))
    frames = _frames(api.create(model="gpt-test", input="hello", stream=True))
    created = _data(next(frames))["response"]
    live = api.get(f"/v1/responses/{created['id']}").json()
    assert live["status"] == "in_progress" and live["output"] == [] and live["usage"] is None
    items = api.get(f"/v1/responses/{created['id']}/input_items").json()["data"]
    assert items[0]["content"][0]["text"] == "hello"
    # Nothing can be chained onto a turn whose answer is not known yet.
    follow = api.create(model="gpt-test", input="next", previous_response_id=created["id"])
    assert follow.status_code == 400
    assert follow.json()["error"]["code"] == "previous_response_in_progress"
    rest = b"".join(frames)
    assert b"response.completed" in rest
    assert api.get(f"/v1/responses/{created['id']}").json()["status"] == "completed"


def test_a_client_that_stops_reading_leaves_an_incomplete_turn_and_no_open_upstream(transactional_db, api,
                                                                                   fake_openai):
    fake_openai.script(Reply(text="one two three four five six", chunk_delay=0.3))
    response = api.create(model="gpt-test", input="x", stream=True)
    frames = _frames(response)
    response_id = _data(next(frames))["response"]["id"]
    for frame in frames:
        if b"output_text.delta" in frame:
            break
    response.close()  # what the WSGI server does when the client is gone
    assert fake_openai.last.client_disconnected.wait(2)
    record = StoredResponse.objects.get(pk=response_id)
    assert (record.status, record.interrupted, record.worker) == ("incomplete", "client_gone", "")
    assert len(live_turns) == 0


def test_a_shutdown_ends_open_streams_with_response_incomplete(api, fake_openai):
    fake_openai.script(Reply(text="one two three four five six", chunk_delay=0.5))
    frames = _frames(api.create(model="gpt-test", input="x", stream=True))
    response_id = _data(next(frames))["response"]["id"]
    threading.Timer(0.3, live_turns.cancel_all, args=(SHUTDOWN,)).start()
    events = [_data(frame) for frame in frames if frame.startswith(b"event:")]
    assert events[-1]["type"] == "response.incomplete"
    record = StoredResponse.objects.get(pk=response_id)
    assert (record.status, record.interrupted) == ("incomplete", "shutdown")
    assert fake_openai.last.client_disconnected.wait(2)


@pytest.mark.parametrize("ending", ["clean close", "no finish_reason before [DONE]"])
def test_a_chat_stream_cut_short_is_failed_and_one_ended_by_done_completes(api, fake_openai, ending):
    chunk = 'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
            '"delta":{"content":"partial"},"finish_reason":null}]}\n\n'
    body = chunk if ending == "clean close" else chunk + "data: [DONE]\n\n"
    fake_openai.script(Raw(200, body.encode(), content_type="text/event-stream", stream=True))
    events = sse_events(api.create(model="gpt-test", input="x", stream=True))
    stored = StoredResponse.objects.get(pk=events[-1]["response"]["id"])
    if ending == "clean close":
        assert events[-1]["type"] == "response.failed"
        assert "before the answer was complete" in events[-1]["response"]["error"]["message"]
        assert stored.status == "failed"
    else:
        assert events[-1]["type"] == "response.completed"
        assert stored.status == "completed"


def test_a_silent_upstream_gets_keep_alive_comments_and_the_answer_still_parses(api, fake_openai, settings):
    settings.GATEWAY.server.sse_keepalive = 0.1
    fake_openai.script(Reply(text="thought about it", first_byte_delay=0.45))
    raw = b"".join(api.create(model="gpt-test", input="x", stream=True).streaming_content).decode()
    assert raw.count(": keep-alive\n\n") >= 2
    events = [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: ")]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_json_turn_whose_client_left_is_stored_incomplete(api, fake_openai, monkeypatch):
    from responses_app import context

    tokens = []
    real = context.TurnContext.for_request

    def remember(request):  # the token the client watcher would set under gunicorn
        ctx = real(request)
        tokens.append(ctx.cancel)
        return ctx

    monkeypatch.setattr(context.TurnContext, "for_request", staticmethod(remember))
    fake_openai.script(Reply(first_byte_delay=5))
    threading.Timer(0.3, lambda: tokens[0].cancel("client_gone")).start()
    started = time.monotonic()
    response = api.create(model="gpt-test", input="x")
    assert response.status_code == 499 and time.monotonic() - started < 2
    assert fake_openai.last.client_disconnected.wait(2)
    record = StoredResponse.objects.get()
    assert (record.status, record.interrupted) == ("incomplete", "client_gone")


# --- the sweep ---------------------------------------------------------------------------------

def _in_progress(api, fake_openai, worker: str) -> str:
    response_id = api.create(model="gpt-test", input="x").json()["id"]
    StoredResponse.objects.filter(pk=response_id).update(status="in_progress", worker=worker)
    return response_id


def _lease(lease_id: str, *, host: str, pid: int, age: float) -> None:
    moment = timezone.now() - timedelta(seconds=age)
    WorkerLease.objects.create(id=lease_id, host=host, pid=pid, started_at=moment, heartbeat_at=moment)


def test_the_sweep_settles_turns_of_dead_workers_and_leaves_live_ones(api, fake_openai):
    import socket

    here = socket.gethostname()
    _lease("elsewhere:1:1:a", host="another-host", pid=1, age=600)  # stopped renewing: dead
    _lease(f"{here}:999999:1:b", host=here, pid=999999, age=1)  # fresh, but no such process here
    alive = f"{here}:{os.getpid()}:{worker_lifecycle._start_time(os.getpid())}:c"
    _lease(alive, host=here, pid=os.getpid(), age=1)  # this very process: alive
    stale = _in_progress(api, fake_openai, "elsewhere:1:1:a")
    crashed = _in_progress(api, fake_openai, f"{here}:999999:1:b")
    running = _in_progress(api, fake_openai, alive)
    assert worker_lifecycle.sweep() == 2
    for response_id in (stale, crashed):
        assert api.get(f"/v1/responses/{response_id}").json()["status"] == "incomplete"
        assert StoredResponse.objects.get(pk=response_id).interrupted == "worker_lost"
    assert StoredResponse.objects.get(pk=running).status == "in_progress"
    assert set(WorkerLease.objects.values_list("pk", flat=True)) == {alive}


def test_the_sweep_settles_turns_older_than_any_turn_can_run(api, fake_openai, settings):
    old = _in_progress(api, fake_openai, "")
    StoredResponse.objects.filter(pk=old).update(
        created_at=timezone.now() - timedelta(seconds=settings.GATEWAY.server.turn_timeout + 120))
    recent = _in_progress(api, fake_openai, "")
    assert worker_lifecycle.sweep() == 1
    assert StoredResponse.objects.get(pk=old).interrupted == "expired"
    assert StoredResponse.objects.get(pk=recent).status == "in_progress"


def test_a_hung_up_turn_whose_end_cannot_be_written_yet_stays_incomplete(transactional_db, api, fake_openai,
                                                                         monkeypatch):
    from django.db import OperationalError

    from conversations_app.store import store

    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    fake_openai.script(Reply(text="one two three four five six", chunk_delay=0.3))
    response = api.create(model="gpt-test", input="x", stream=True)
    frames = _frames(response)
    response_id = _data(next(frames))["response"]["id"]
    monkeypatch.setattr(store.inner, "finish_turn", database_down)
    response.close()  # the client leaves while the database is away
    monkeypatch.undo()
    assert worker_lifecycle.retry_deferred() == 0
    record = StoredResponse.objects.get(pk=response_id)
    # Nobody was told it failed: it is stored as what it was, cut short by its client.
    assert (record.status, record.interrupted, record.error) == ("incomplete", "client_gone", None)


def test_a_client_gone_before_its_turn_opened_costs_nothing(api, fake_openai, monkeypatch):
    from responses_app import context

    real = context.TurnContext.for_request

    def already_gone(request):  # the client watcher found the socket closed on its first look
        ctx = real(request)
        ctx.cancel.cancel("client_gone")
        return ctx

    monkeypatch.setattr(context.TurnContext, "for_request", staticmethod(already_gone))
    assert api.create(model="gpt-test", input="x", stream=True).status_code == 499
    assert not StoredResponse.objects.exists()
    assert fake_openai.requests == []
