"""`background: true`: the turn runs on after its request; polling, following its events with their
first numbering, and `POST /v1/responses/{id}/cancel`.

The runner is a thread here (a greenlet under gunicorn), with its own database connection, so these
tests use committed transactions. tests/e2e/test_background.py does the same across workers and
instances, with a worker killed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conversations_app.store import store
from gateway_project.config import GatewayConfig
from responses_app import background
from responses_app.cancellation import CancelToken
from responses_app.event_log import EventLog
from tests.conftest import ApiClient, gateway_config_for, sse_events
from tests.contract import validate
from tests.fakes.openai_upstream import FakeOpenAI, Reply


@pytest.fixture
def bg_api(transactional_db: None, gateway: GatewayConfig) -> ApiClient:
    return ApiClient()


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def settled(api: ApiClient, response_id: str) -> dict[str, Any]:
    def poll() -> dict[str, Any] | None:
        body = api.get(f"/v1/responses/{response_id}").json()
        return body if body["status"] not in ("queued", "in_progress") else None

    return wait_until(poll)


SLOW = Reply(text=" ".join(f"w{i}" for i in range(60)), chunk_delay=0.1)


def test_a_background_response_answers_at_once_and_is_polled_to_its_end(bg_api: ApiClient, fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="Done in the background.", first_byte_delay=0.5))
    started = time.monotonic()
    response = bg_api.create(model="gpt-test", input="long task", background=True)
    assert time.monotonic() - started < 0.5  # not waiting on the upstream
    assert response.status_code == 200
    body = response.json()
    validate("Response", body)
    assert (body["status"], body["background"], body["output"], body["usage"]) == ("in_progress", True, [], None)

    final = settled(bg_api, body["id"])
    validate("Response", final)
    assert final["status"] == "completed" and final["background"] is True
    assert final["output"][0]["content"][0]["text"] == "Done in the background."
    assert final["usage"]["input_tokens"] == 11
    assert fake_openai.requests[-1].json["stream"] is True  # a background turn always streams upstream


def test_background_needs_store(api: ApiClient):
    response = api.create(model="gpt-test", input="x", background=True, store=False)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("background", "invalid_value")


def test_a_background_stream_can_be_left_and_resumed_after_its_last_event(bg_api: ApiClient,
                                                                          fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="one two three four five six", chunk_delay=0.05))
    live = sse_events(bg_api.create(model="gpt-test", input="hi", background=True, stream=True))
    for event in live:
        validate("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in live] == list(range(len(live)))
    assert live[-1]["type"] == "response.completed" and live[0]["response"]["background"] is True
    response_id = live[0]["response"]["id"]

    # A client that lost the stream after event 4 resumes: exactly the rest, numbered as first sent.
    resumed = sse_events(bg_api.get(f"/v1/responses/{response_id}", stream="true", starting_after=4))
    assert resumed == live[5:]
    assert sse_events(bg_api.get(f"/v1/responses/{response_id}", stream="true")) == live


def test_the_client_leaving_a_background_stream_does_not_stop_the_turn(bg_api: ApiClient, fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="a b c d e f g h", chunk_delay=0.1))
    stream: Any = bg_api.create(model="gpt-test", input="hi", background=True, stream=True)
    chunks = iter(stream.streaming_content)
    first = next(chunks).decode()
    stream.close()  # the client hangs up after response.created
    response_id = first.split('"id":"', 1)[1].split('"', 1)[0]
    final = settled(bg_api, response_id)
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "a b c d e f g h"
    assert not fake_openai.requests[-1].client_disconnected.is_set()


def test_an_upstream_that_stalls_fails_the_turn_after_the_idle_timeout(bg_api: ApiClient, fake_openai: FakeOpenAI,
                                                                      settings: Any):
    # The runner reads its upstream itself (no keep-alives to send): the limits still hold.
    settings.GATEWAY = gateway_config_for(fake_openai.url, providers={
        "openai": {"type": "openai", "api_key": "sk-test-upstream-key", "endpoint": f"{fake_openai.url}/v1",
                   "first_byte_timeout": 5, "idle_timeout": 0.3, "retry": {"max_retries": 0}},
        "demo": {"type": "demo"}})
    fake_openai.script(Reply(text="one two three four", stall_after=3))
    started = time.monotonic()
    body = bg_api.create(model="gpt-test", input="go", background=True).json()
    final = settled(bg_api, body["id"])
    assert time.monotonic() - started < 3
    assert final["status"] == "failed" and "stalled" in final["error"]["message"]
    assert fake_openai.requests[-1].client_disconnected.wait(2)


def test_cancel_stops_the_upstream_and_keeps_what_was_said(bg_api: ApiClient, fake_openai: FakeOpenAI):
    fake_openai.script(SLOW)
    body = bg_api.create(model="gpt-test", input="go", background=True).json()
    wait_until(lambda: len(fake_openai.requests) == 1)
    time.sleep(0.5)  # a few words in
    cancelled = bg_api.post(f"/v1/responses/{body['id']}/cancel", None)
    assert cancelled.status_code == 200
    validate("Response", cancelled.json())
    assert cancelled.json()["status"] == "cancelled"
    # The upstream call is dropped, and the turn stores what the model had said, still `cancelled`.
    assert fake_openai.requests[-1].client_disconnected.wait(5)
    wait_until(lambda: body["id"] not in background.running_here.ids())
    final = bg_api.get(f"/v1/responses/{body['id']}").json()
    assert final["status"] == "cancelled" and final["completed_at"] is None
    text = final["output"][0]["content"][0]["text"] if final["output"] else ""
    assert text.startswith("w0") and len(text.split()) < 60
    # Cancelling again answers the same; so does cancelling a response that completed first.
    assert bg_api.post(f"/v1/responses/{body['id']}/cancel", None).json()["status"] == "cancelled"
    fake_openai.script(Reply(text="quick"))
    done = bg_api.create(model="gpt-test", input="go", background=True).json()
    settled(bg_api, done["id"])
    assert bg_api.post(f"/v1/responses/{done['id']}/cancel", None).json()["status"] == "completed"


def test_a_cancel_served_elsewhere_reaches_the_runner_through_the_database(bg_api: ApiClient,
                                                                          fake_openai: FakeOpenAI):
    fake_openai.script(SLOW)
    body = bg_api.create(model="gpt-test", input="go", background=True).json()
    wait_until(lambda: len(fake_openai.requests) == 1)
    store.cancel_response(body["id"], "")  # what another worker or instance's cancel does
    assert body["id"] in background.running_here.ids()
    assert background.poll_cancellations() == 1  # each worker's maintenance loop, twice a second
    assert fake_openai.requests[-1].client_disconnected.wait(5)
    wait_until(lambda: body["id"] not in background.running_here.ids())
    assert bg_api.get(f"/v1/responses/{body['id']}").json()["status"] == "cancelled"


def test_a_follower_of_a_cancelled_response_sees_its_stream_end(bg_api: ApiClient, fake_openai: FakeOpenAI):
    fake_openai.script(SLOW)
    body = bg_api.create(model="gpt-test", input="go", background=True).json()
    wait_until(lambda: len(fake_openai.requests) == 1)
    follower = bg_api.get(f"/v1/responses/{body['id']}", stream="true")
    bg_api.post(f"/v1/responses/{body['id']}/cancel", None)
    events = sse_events(follower)  # ends: no event type says "cancelled"
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] not in ("response.completed", "response.failed", "response.incomplete")


def test_only_background_responses_can_be_cancelled(api: ApiClient, fake_openai: FakeOpenAI):
    created = api.create(model="gpt-test", input="x").json()
    response = api.post(f"/v1/responses/{created['id']}/cancel", None)
    assert response.status_code == 400 and "background" in response.json()["error"]["message"]
    missing = api.post("/v1/responses/resp_nothing/cancel", None)
    assert missing.status_code == 404
    assert api.get(f"/v1/responses/{created['id']}/cancel").status_code == 405


def test_background_turns_are_charged_their_real_usage(bg_api: ApiClient, fake_openai: FakeOpenAI, settings: Any):
    """The runner, not the request, settles the rate-limit ticket."""
    from gateway_project.middleware.ratelimit import Ticket

    settled_tickets: list[Ticket] = []
    original = Ticket.settle

    def spy(ticket: Ticket) -> None:
        settled_tickets.append(ticket)
        original(ticket)

    fake_openai.script(Reply(text="counted", first_byte_delay=0.3, prompt_tokens=40, completion_tokens=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Ticket, "settle", spy)
        settings.GATEWAY = settings.GATEWAY.model_copy(update={"rate_limit": settings.GATEWAY.rate_limit.model_copy(
            update={"enabled": True, "tokens_per_minute": 100_000, "rpm": 1000})})
        body = ApiClient().create(model="gpt-test", input="x", background=True).json()
        assert settled_tickets == []  # the request is over, the turn is not
        settled(bg_api, body["id"])
        [create] = wait_until(lambda: [t for t in settled_tickets if t.decision.reserved_tokens])  # not the polls
    assert create.used == 42


def test_the_local_event_log_follows_and_numbers_like_the_stream():
    log = EventLog("")
    log.open("resp_x")
    for number in range(3):
        log.append("resp_x", number, "response.output_text.delta", f"frame {number}")
    token = CancelToken()
    entries = log.follow("resp_x", 0, token)
    assert entries is not None
    first, second, silence = next(entries), next(entries), next(entries)
    assert (first and first.frame, second and second.frame, silence) == ("frame 1", "frame 2", None)
    log.close("resp_x")
    end = next(entries)
    assert end is not None and end.kind == "gateway.end"
    assert log.follow("resp_other", -1, token) is None
