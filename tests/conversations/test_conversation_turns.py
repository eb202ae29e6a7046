"""`conversation` on POST /v1/responses: the conversation's items are the turn's context, and the
turn's input and output are appended when it ends; with the storage staying linear (a bounded
number of queries whatever the conversation's length)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations_app.api_store import api_conversations
from conversations_app.models import ConversationItem, StoredResponse
from conversations_app.usage import rollup as usage_rollup
from tests.conftest import ApiClient, sse_events, sse_frames
from tests.contract import validate
from tests.fakes.openai_upstream import Fail, FakeOpenAI, Reply


def _new(owner: str = "", items: list[dict[str, Any]] | None = None) -> str:
    return api_conversations.create_conversation(owner, {}, items or []).id


def _texts(conversation_id: str) -> list[tuple[str, str]]:
    out = []
    for item in api_conversations.items(conversation_id, "") or []:
        if item["type"] == "message":
            out.append((item["role"], item["content"][0]["text"]))
        else:
            out.append((item["type"], item.get("call_id", "")))
    return out


def _sent(fake: FakeOpenAI) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content") if m.get("content") is not None else m.get("tool_calls"))
            for m in fake.last.json["messages"]]


def test_a_five_turn_chat_gives_the_upstream_the_whole_history_each_turn(api: ApiClient, fake_openai: FakeOpenAI):
    conversation = _new(items=[{"id": "msg_seed", "type": "message", "role": "system", "status": "completed",
                                "content": [{"type": "input_text", "text": "Be brief."}]}])
    for turn in range(5):
        fake_openai.script(Reply(text=f"answer {turn}"))
        stream = turn % 2 == 1
        response = api.create(model="gpt-test", input=f"question {turn}", conversation=conversation, stream=stream)
        assert response.status_code == 200
        body = sse_events(response)[-1]["response"] if stream else response.json()
        validate("Response", body)
        assert body["conversation"] == {"id": conversation}
        sent = [(role, text if isinstance(text, str) else text[0]["text"]) for role, text in _sent(fake_openai)]
        earlier = [item for n in range(turn) for item in (("user", f"question {n}"), ("assistant", f"answer {n}"))]
        assert sent == [("system", "Be brief."), *earlier, ("user", f"question {turn}")]
    assert _texts(conversation)[-2:] == [("user", "question 4"), ("assistant", "answer 4")]
    assert len(_texts(conversation)) == 11
    # The stored response shows its conversation too.
    assert api.get(f"/v1/responses/{body['id']}").json()["conversation"] == {"id": conversation}


def test_a_tool_round_trip_inside_a_conversation(api: ApiClient, fake_openai: FakeOpenAI):
    conversation = _new()
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_7", "name": "weather", "arguments": '{"city":"Oslo"}'}]),
                       Reply(text="It is 3 degrees in Oslo."))
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}]
    first = api.create(model="gpt-test", input="Weather in Oslo?", conversation={"id": conversation},
                       tools=tools).json()
    assert first["output"][0]["type"] == "function_call"
    second = api.create(model="gpt-test", conversation=conversation, tools=tools,
                        input=[{"type": "function_call_output", "call_id": "call_7", "output": "3 C"}]).json()
    assert second["output"][0]["content"][0]["text"] == "It is 3 degrees in Oslo."
    roles = [m["role"] for m in fake_openai.last.json["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert fake_openai.last.json["messages"][1]["tool_calls"][0]["id"] == "call_7"
    assert _texts(conversation) == [("user", "Weather in Oslo?"), ("function_call", "call_7"),
                                    ("function_call_output", "call_7"), ("assistant", "It is 3 degrees in Oslo.")]


def test_refusals_write_nothing(api: ApiClient, fake_openai: FakeOpenAI):
    conversation = _new()
    foreign = _new(owner="someone-else")
    before = StoredResponse.objects.count()
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"conversation": "conv_does_not_exist"}, 404, "conversation"),
        ({"conversation": foreign}, 404, "conversation"),  # another tenant's: as if it did not exist
        ({"conversation": conversation, "previous_response_id": "resp_x"}, 400, "previous_response_id"),
        ({"conversation": conversation, "store": False}, 400, "store"),
        ({"conversation": {"nope": 1}}, 400, "conversation"),
    ]
    for extra, status, param in cases:
        response = api.create(model="gpt-test", input="hi", **extra)
        assert response.status_code == status, (extra, response.content)
        assert response.json()["error"]["param"] == param
    assert StoredResponse.objects.count() == before and not fake_openai.requests
    assert ConversationItem.objects.count() == 0


def test_a_failed_turn_appends_nothing(api: ApiClient, fake_openai: FakeOpenAI):
    conversation = _new()
    fake_openai.script(Fail(500))
    assert api.create(model="gpt-test", input="hi", conversation=conversation).status_code >= 500
    fake_openai.script(Reply(text="ok"))
    assert api.create(model="gpt-test", input="again", conversation=conversation).status_code == 200
    assert _texts(conversation) == [("user", "again"), ("assistant", "ok")]


@pytest.mark.parametrize("turns", [1, 50, 500])
def test_a_turn_costs_the_same_queries_whatever_the_conversation_length(api: ApiClient, fake_openai: FakeOpenAI,
                                                                      turns: int, monkeypatch: pytest.MonkeyPatch):
    conversation = _new()
    history = []
    for turn in range(turns):
        history += [{"type": "message", "role": "user", "content": f"q{turn}"},
                    {"type": "message", "role": "assistant", "content": f"a{turn}"}]
    for start in range(0, len(history), 200):
        api_conversations.add_items(conversation, "", [_canonical(item) for item in history[start:start + 200]])
    with CaptureQueriesContext(connection) as loading:
        assert len(api_conversations.items(conversation, "") or []) == 2 * turns
    assert len(loading) == 2  # the conversation, then all of its items
    assert not any("OFFSET" in q["sql"].upper() for q in loading.captured_queries)
    fake_openai.script(Reply(text="fine"))
    # As in a gunicorn worker, where the usage rollup is written in batches, not per turn.
    monkeypatch.setattr(usage_rollup, "batched", True)
    with CaptureQueriesContext(connection) as turn_queries:
        assert api.create(model="gpt-test", input="next", conversation=conversation).status_code == 200
    # Pinned: the same number at 1, 50 and 500 turns (load, write the turn, append its two items).
    assert len(turn_queries) == QUERIES_PER_TURN, [q["sql"][:120] for q in turn_queries.captured_queries]
    assert len(fake_openai.last.json["messages"]) == 2 * turns + 1


# Load the conversation (2), write the turn (response, items), append it: reserve the sequence
# numbers and count the turn (1 UPDATE ... RETURNING), read its items and the ids taken, list them;
# plus the savepoint of the test's own transaction (2).
QUERIES_PER_TURN = 10


def _canonical(item: dict[str, Any]) -> dict[str, Any]:
    from responses_app.items import canonical_items
    from responses_app.schema import _INPUT_ITEMS

    return canonical_items(_INPUT_ITEMS.validate_python([item]))[0]


def test_input_tokens_counts_the_conversation_first(api: ApiClient):
    conversation = _new(items=[_canonical({"type": "message", "role": "user", "content": "word " * 200})])
    alone = api.post("/v1/responses/input_tokens", {"model": "gpt-test", "input": "hi"}).json()["input_tokens"]
    with_history = api.post("/v1/responses/input_tokens", {"model": "gpt-test", "input": "hi",
                                                           "conversation": conversation}).json()["input_tokens"]
    assert with_history >= alone + 200
    history_only = api.post("/v1/responses/input_tokens", {"model": "gpt-test", "conversation": conversation})
    assert history_only.status_code == 200 and history_only.json()["input_tokens"] >= 200
    unknown = api.post("/v1/responses/input_tokens", {"model": "gpt-test", "conversation": "conv_nope"})
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "conversation")


def test_a_turn_that_ends_after_its_conversation_was_deleted_is_not_appended(api: ApiClient,
                                                                             fake_openai: FakeOpenAI):
    from conversations_app.api_store import ApiConversationStore

    conversation = _new()
    fake_openai.script(Reply(text="late"))
    stream = api.create(model="gpt-test", input="hi", conversation=conversation, stream=True)
    frames = sse_frames(stream.streaming_content)  # type: ignore[attr-defined]
    next(frames)  # response.created: the turn is open
    assert api_conversations.delete_conversation(conversation, "")
    for _ in ApiConversationStore().remove_in_batches(conversation):
        pass  # removed while the turn still runs (its row too)
    rest = b"".join(frames).decode()
    assert "response.completed" in rest  # the client is answered; nothing is written for a gone conversation
    assert not ConversationItem.objects.filter(conversation_id=conversation).exists()
