"""previous_response_id: the upstream gets the whole chain, storage stays linear, loads stay constant."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations_app import chain_memory, turn_statements
from conversations_app.models import Conversation, Item, StoredResponse
from conversations_app.store import store
from tests.contract import validate
from tests.fakes.openai_upstream import Reply


@pytest.fixture(autouse=True, params=["kept", "read"])
def chain_source(request, monkeypatch):
    """Every test here twice: with the worker's memory of the chains it stored (the default,
    conversations_app.chain_memory), and with every chain read back from the database."""
    budget = chain_memory.memory.budget if request.param == "kept" else 0
    monkeypatch.setattr(chain_memory, "memory", chain_memory.ChainMemory(budget))
    return request.param


def _text(body):
    return body["output"][0]["content"][0]["text"]


def test_the_upstream_receives_the_whole_chain_oldest_first(api, fake_openai):
    fake_openai.script(Reply(text="Hi Ann."), Reply(text="You are Ann."), Reply(text="Bye Ann."))
    first = api.create(model="gpt-test", input="I am Ann.", instructions="First rules").json()
    second = api.create(model="gpt-test", input="Who am I?", previous_response_id=first["id"]).json()
    third = api.create(model="gpt-test", input="Bye", previous_response_id=second["id"],
                       instructions="Only the current rules").json()
    assert third["previous_response_id"] == second["id"]
    assert fake_openai.requests[1].json["messages"] == [
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hi Ann."},
        {"role": "user", "content": "Who am I?"},
    ]
    assert fake_openai.requests[2].json["messages"] == [
        {"role": "system", "content": "Only the current rules"},
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hi Ann."},
        {"role": "user", "content": "Who am I?"},
        {"role": "assistant", "content": "You are Ann."},
        {"role": "user", "content": "Bye"},
    ]
    assert Conversation.objects.count() == 1
    assert Conversation.objects.get().turn_count == 3


def test_two_requests_may_branch_from_one_response(api, fake_openai):
    root = api.create(model="gpt-test", input="root").json()
    a = api.create(model="gpt-test", input="branch a", previous_response_id=root["id"]).json()
    b = api.create(model="gpt-test", input="branch b", previous_response_id=root["id"]).json()
    follow = api.create(model="gpt-test", input="after b", previous_response_id=b["id"])
    assert follow.status_code == 200
    sent = [m["content"] for m in fake_openai.last.json["messages"] if m["role"] == "user"]
    assert sent == ["root", "branch b", "after b"]
    assert a["id"] != b["id"]


def test_a_tool_call_round_trip(api, fake_openai):
    tools = [{"type": "function", "name": "get_weather", "description": "Weather by city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}]
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_1", "name": "get_weather",
                                                   "arguments": '{"city":"Oslo"}'}]),
                       Reply(text="It is 3 degrees in Oslo."))
    first = api.create(model="gpt-test", input="Weather in Oslo?", tools=tools, tool_choice="auto").json()
    validate("Response", first)
    [call] = first["output"]
    assert call["type"] == "function_call" and call["call_id"] == "call_1" and call["status"] == "completed"
    assert call["id"].startswith("fc_")
    assert fake_openai.requests[0].json["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}}]
    assert fake_openai.requests[0].json["tool_choice"] == "auto"

    second = api.create(model="gpt-test", previous_response_id=first["id"], tools=tools,
                        input=[{"type": "function_call_output", "call_id": "call_1", "output": '{"temp":3}'}]).json()
    assert _text(second) == "It is 3 degrees in Oslo."
    assert fake_openai.requests[1].json["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":3}'},
    ]


def test_a_forced_tool_choice_is_translated(api, fake_openai):
    api.create(model="gpt-test", input="x", tools=[{"type": "function", "name": "f", "parameters": None}],
               tool_choice={"type": "function", "name": "f"}, parallel_tool_calls=False)
    sent = fake_openai.last.json
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert sent["parallel_tool_calls"] is False


@pytest.mark.parametrize("how", ["unknown", "deleted", "store_false"])
def test_an_unusable_previous_response_is_a_400(api, how):
    if how == "unknown":
        previous = "resp_does_not_exist"
    else:
        body = api.create(model="gpt-test", input="x", store=(how != "store_false")).json()
        previous = body["id"]
        if how == "deleted":
            assert api.delete(f"/v1/responses/{previous}").status_code == 200
    before = StoredResponse.objects.count()
    response = api.create(model="gpt-test", input="next", previous_response_id=previous)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"Previous response with id '{previous}' not found.", "type": "invalid_request_error",
        "param": "previous_response_id", "code": "previous_response_not_found"}
    assert StoredResponse.objects.count() == before


def test_a_deleted_ancestor_keeps_its_descendants_context(api, fake_openai):
    first = api.create(model="gpt-test", input="one").json()
    second = api.create(model="gpt-test", input="two", previous_response_id=first["id"]).json()
    api.delete(f"/v1/responses/{first['id']}")
    api.create(model="gpt-test", input="three", previous_response_id=second["id"])
    assert [m["content"] for m in fake_openai.last.json["messages"] if m["role"] == "user"] == ["one", "two", "three"]


def _build_chain(api, depth):
    previous = None
    for turn in range(depth):
        body = {"model": "gpt-test", "input": f"turn {turn}"}
        if previous:
            body["previous_response_id"] = previous
        previous = api.create(**body).json()["id"]
    return previous


@pytest.mark.parametrize("depth", [1, 50])
def test_loading_a_chain_is_one_statement_at_any_depth(api, django_assert_num_queries, depth, chain_source):
    """Pinned (conversations_app.turn_statements.read_chain): the anchor and the whole chain's items,
    walked inside Postgres, in one round trip, in order; or, kept by the worker that stored it,
    only whether the anchor may still be seen."""
    last = _build_chain(api, depth)
    with django_assert_num_queries(1) as queries:
        chain = store.get_chain(last, owner="")
    if chain_source == "read" or depth == 1:  # a chain's first turn is not kept
        assert "WITH RECURSIVE" in queries.captured_queries[0]["sql"]
    else:
        assert queries.captured_queries[0]["sql"].startswith("SELECT 1 FROM conversations_app_storedresponse WHERE")
    assert len(chain.items) == depth * 2
    assert [item["content"][0]["text"] for item in chain.items[::2]] == [f"turn {n}" for n in range(depth)]
    assert [item["role"] for item in chain.items[:2]] == ["user", "assistant"]
    assert chain.depth == depth - 1 and not chain.in_progress


def walked(response_id: str) -> bool:
    """Whether reading `response_id`'s chain ran the recursive walk (EXPLAIN ANALYZE)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE) " + turn_statements._READ_CHAIN_SQL, {"id": response_id, "owner": ""})
        plan = [row[0] for row in cursor.fetchall()]
    (union,) = [line for line in plan if "Recursive Union" in line]
    return "never executed" not in union


def user_texts(chain) -> list[str]:
    return [item["content"][0]["text"] for item in chain.items if item.get("role") == "user"]


def test_a_chain_that_never_branched_is_read_without_walking_it(api):
    last = _build_chain(api, 5)
    assert not walked(last)
    assert user_texts(store.get_chain(last, owner="")) == [f"turn {n}" for n in range(5)]


def test_a_branch_below_the_anchor_is_walked_and_only_its_own_history_read(api):
    root = api.create(model="gpt-test", input="root").json()["id"]
    a = api.create(model="gpt-test", input="a", previous_response_id=root).json()["id"]
    a2 = api.create(model="gpt-test", input="a2", previous_response_id=a).json()["id"]
    b = api.create(model="gpt-test", input="b", previous_response_id=root).json()["id"]
    # A second response at depth 1 in the conversation: the range would hold both branches.
    assert walked(a2) and walked(b)
    assert user_texts(store.get_chain(a2, owner="")) == ["root", "a", "a2"]
    assert user_texts(store.get_chain(b, owner="")) == ["root", "b"]
    # A branch above the anchor does not matter to it.
    api.create(model="gpt-test", input="a3", previous_response_id=a2)
    api.create(model="gpt-test", input="a2'", previous_response_id=a)
    assert not walked(root)
    assert user_texts(store.get_chain(root, owner="")) == ["root"]


def test_a_chain_is_read_only_by_its_owner_and_not_once_deleted(api):
    last = _build_chain(api, 3)
    assert store.get_chain(last, owner="someone-else") is None
    assert store.get_chain("resp_" + "0" * 48, owner="") is None
    assert store.get_chain("x" * 500, owner="") is None  # longer than any id: nothing to look up
    middle = StoredResponse.objects.get(depth=1)
    middle.deleted_at = timezone.now()
    middle.save()
    # A deleted response in the middle stays in the context of those that followed it.
    assert len(store.get_chain(last, owner="").items) == 6
    assert store.get_chain(middle.id, owner="") is None


def test_the_chain_read_looks_items_up_by_response_whatever_the_statistics(api):
    """Pinned (turn_statements._READ_CHAIN_SQL): seen in the benchmark suite, right after a burst of
    turns and before autovacuum analyzed the grown items table, a plain join read a chain's items
    with a sequential scan of the whole table. Here the tables hold 40,000 more responses that were
    never analyzed; the plan must still look the items up through their response's index."""
    last = _build_chain(api, 3)
    conversation = StoredResponse.objects.get(pk=last).conversation_id
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {StoredResponse._meta.db_table} (id, depth, owner, subject, model, provider, "  # noqa: S608
                       "status, created_at, settings, input_tokens, cached_tokens, cache_write_tokens, "
                       "output_tokens, reasoning_tokens, usage_reported, conversation_id, interrupted, worker) "
                       "SELECT 'filler_' || g, 0, '', '', 'm', 'p', 'completed', now(), '{}', 0, 0, 0, 0, 0, true, "
                       "%s, '', '' FROM generate_series(1, 40000) g", [conversation])
        cursor.execute(f"INSERT INTO {Item._meta.db_table} (response_id, kind, position, item_id, type, data) "  # noqa: S608
                       f"SELECT 'filler_' || g, k, 0, 'msg', 'message', '{{}}'::jsonb "
                       "FROM generate_series(1, 40000) g, generate_series(0, 1) k")
        cursor.execute("EXPLAIN " + turn_statements._READ_CHAIN_SQL, {"id": last, "owner": ""})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Seq Scan on {Item._meta.db_table}" not in plan, plan


def test_storage_grows_linearly_with_turns(api):
    _build_chain(api, 20)
    # Each turn stores its own input and output item: no copy of earlier turns anywhere.
    assert Item.objects.count() == 40
    assert StoredResponse.objects.count() == 20


def test_a_follow_up_right_after_a_stream_finds_the_turn(api):
    from tests.conftest import sse_events

    events = sse_events(api.create(model="gpt-test", input="streamed", stream=True))
    follow = api.create(model="gpt-test", input="next", previous_response_id=events[-1]["response"]["id"])
    assert follow.status_code == 200


def _writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_a_turn_is_one_statement_per_write(api, fake_openai, monkeypatch):
    """Pinned (conversations_app.turn_statements): a JSON turn is written whole in one statement, a
    stream is opened in one and settled in one; a follow-up adds only the read of its chain."""
    from conversations_app.usage import rollup
    from tests.conftest import sse_events

    monkeypatch.setattr(rollup, "batched", True)  # as in a gunicorn worker: no rollup write per turn
    with CaptureQueriesContext(connection) as first:
        first_id = api.create(model="gpt-test", input="one").json()["id"]
    assert len(_writes(first)) == 1, _writes(first)
    with CaptureQueriesContext(connection) as follow_up:
        second_id = api.create(model="gpt-test", input="two", previous_response_id=first_id).json()["id"]
    assert len(_writes(follow_up)) == 2, _writes(follow_up)
    with CaptureQueriesContext(connection) as streamed:
        events = sse_events(api.create(model="gpt-test", input="three", previous_response_id=second_id, stream=True))
    assert events[-1]["type"] == "response.completed"
    assert len(_writes(streamed)) == 1 + 2, _writes(streamed)  # the chain's read, open, settle
    conversation = Conversation.objects.get()
    assert conversation.turn_count == 3
    assert conversation.input_tokens == sum(r.input_tokens for r in StoredResponse.objects.all()) > 0
    assert [r.depth for r in StoredResponse.objects.order_by("created_at")] == [0, 1, 2]
    assert Item.objects.count() == 6
