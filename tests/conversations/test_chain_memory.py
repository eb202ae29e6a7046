"""The chains a worker stored last, kept in its memory (conversations_app.chain_memory): the same
context the database holds, served only while Postgres says the response may be seen, bounded."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from conversations_app import chain_memory, turn_statements
from conversations_app.chain_memory import ENTRY_OVERHEAD, ITEM_OVERHEAD, ChainMemory, json_size
from conversations_app.models import Conversation, Item, StoredResponse
from conversations_app.store import Chain, store
from responses_app import worker_lifecycle
from tests.conftest import sse_events
from tests.fakes.openai_upstream import Reply

# --- the memory on its own ---------------------------------------------------------------------------


def _items(text: str) -> list[dict]:
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


def _chain(response_id: str, items: list[dict], *, depth: int = 0, in_progress: bool = False) -> Chain:
    return Chain(response_id, "conv_1", depth, items, in_progress=in_progress)


def test_a_kept_chain_is_recalled_only_for_its_owner():
    memory = ChainMemory(1 << 20)
    chain = _chain("resp_a", _items("hello"))
    memory.remember_read(chain, "acme")
    assert memory.recall("resp_a", "acme") is chain
    assert memory.recall("resp_a", "other") is None
    assert memory.recall("resp_b", "acme") is None


def test_a_turn_replaces_its_parent_and_counts_only_what_it_added():
    memory = ChainMemory(1 << 20)
    first = _chain("resp_1", _items("one"))
    memory.remember_read(first, "acme")
    second = _chain("resp_2", first.items + _items("two"), depth=1)
    memory.remember_turn(second, "acme", parent=first, added=second.items[1:])
    assert memory.recall("resp_1", "acme") is None  # the latest of a chain is what is kept
    assert memory.recall("resp_2", "acme") is second
    assert len(memory) == 1
    assert memory.used_bytes == (json_size(first.items) + json_size(second.items[1:]) + 2 * ITEM_OVERHEAD
                                 + ENTRY_OVERHEAD)


def test_a_chains_first_turn_is_not_kept():
    memory = ChainMemory(1 << 20)
    first = _chain("resp_1", _items("one"))
    memory.remember_turn(first, "acme", parent=None, added=first.items)
    assert len(memory) == 0 and memory.used_bytes == 0


def test_a_turn_after_a_parent_not_kept_here_counts_the_whole_chain():
    memory = ChainMemory(1 << 20)
    parent = _chain("resp_1", _items("one") * 3)
    chain = _chain("resp_2", parent.items + _items("two"), depth=1)
    memory.remember_turn(chain, "acme", parent=parent, added=_items("two"))
    assert memory.used_bytes == (json_size(parent.items) + json_size(_items("two")) + 4 * ITEM_OVERHEAD
                                 + ENTRY_OVERHEAD)


def test_the_least_recently_used_go_beyond_the_budget():
    one_entry = json_size(_items("x" * 100)) + ITEM_OVERHEAD + ENTRY_OVERHEAD
    memory = ChainMemory(2 * one_entry)
    chains = [_chain(f"resp_{n}", _items(str(n) * 100)) for n in range(3)]
    memory.remember_read(chains[0], "acme")
    memory.remember_read(chains[1], "acme")
    assert memory.recall("resp_0", "acme") is chains[0]  # now the most recently used
    memory.remember_read(chains[2], "acme")
    assert [memory.recall(f"resp_{n}", "acme") is not None for n in range(3)] == [True, False, True]
    assert memory.used_bytes <= memory.budget


def test_what_cannot_be_kept_is_not():
    small = ChainMemory(ITEM_OVERHEAD + ENTRY_OVERHEAD + 10)
    small.remember_read(_chain("resp_big", _items("x" * 100)), "acme")
    assert len(small) == 0 and small.used_bytes == 0
    off = ChainMemory(0)
    off.remember_read(_chain("resp_a", _items("a")), "acme")
    off.remember_turn(_chain("resp_b", _items("a") + _items("b")), "acme", parent=_chain("resp_a", _items("a")),
                      added=_items("b"))
    assert len(off) == 0
    running = ChainMemory(1 << 20)
    running.remember_read(_chain("resp_running", _items("a"), in_progress=True), "acme")
    assert len(running) == 0


def _answer(n: int, words: int) -> dict:
    from benchmarks import english

    return {"id": f"msg_{n:048x}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "text": english.text(words, seed=n)}]}


def test_the_budget_counts_what_the_kept_items_hold_in_memory():
    """The estimate (ITEM_OVERHEAD, ENTRY_OVERHEAD) against what tracemalloc sees, for short and
    long messages: the budget is the worker memory the entries hold, not their JSON."""
    import tracemalloc

    from benchmarks import english
    from gateway_project import fast_json

    for words in (10, 300):
        turns = [fast_json.loads(fast_json.dumps([*_items(english.text(words, seed=n)), _answer(n + 1, words)]))
                 for n in range(500)]
        tracemalloc.start()
        memory = ChainMemory(1 << 30)
        for n, items in enumerate(turns):
            memory.remember_read(_chain(f"resp_{n}", items), "acme")
        structures = tracemalloc.get_traced_memory()[0]
        held = fast_json.loads(fast_json.dumps(turns))  # the items themselves, as decoded
        total = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert held
        assert 0.85 < memory.used_bytes / total < 1.15, (words, memory.used_bytes, structures, total)


# --- through the API, on Postgres -------------------------------------------------------------------


@pytest.fixture
def memory(monkeypatch):
    kept = ChainMemory(1 << 20)
    monkeypatch.setattr(chain_memory, "memory", kept)
    return kept


def _read_from_postgres(response_id: str, owner: str = "") -> Chain:
    read = turn_statements.read_chain(response_id, owner)
    assert read is not None
    conversation_id, depth, status, items, _ = read
    return Chain(response_id, conversation_id, depth, items, in_progress=status == "in_progress")


def test_the_kept_chain_is_what_the_database_holds(api, fake_openai, memory):
    """A tool call and its output, a streamed turn, an answer with a NUL (stored as U+FFFD): each
    turn's kept context equals the chain read back from Postgres."""
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    fake_openai.script(Reply(text="", tool_calls=[{"id": "call_1", "name": "lookup", "arguments": '{"q":"x"}'}]),
                       Reply(text="Found it\x00."), Reply(text="Streamed answer."), Reply(text="Last."))
    first = api.create(model="gpt-test", input="Look it up.", tools=tools).json()
    second = api.create(model="gpt-test", previous_response_id=first["id"], tools=tools, input=[
        {"type": "function_call_output", "call_id": "call_1", "output": "42"}]).json()
    events = sse_events(api.create(model="gpt-test", input="Stream it.", previous_response_id=second["id"],
                                   stream=True))
    third = events[-1]["response"]
    fourth = api.create(model="gpt-test", input=[{"role": "developer", "content": "Be brief."},
                                                  {"role": "user", "content": "Again."}],
                        previous_response_id=third["id"]).json()
    for response in (first, second, third, fourth):
        kept = memory.recall(response["id"], "")
        if response is not fourth:
            assert kept is None  # replaced by the turn that followed it
            continue
        assert kept == _read_from_postgres(response["id"])
    assert "Found it\ufffd." in str(memory.recall(fourth["id"], "").items)


def test_a_follow_up_reads_only_whether_its_previous_response_may_be_seen(api, fake_openai, memory):
    first = api.create(model="gpt-test", input="one").json()
    second = api.create(model="gpt-test", input="two", previous_response_id=first["id"]).json()
    with CaptureQueriesContext(connection) as queries:
        third = api.create(model="gpt-test", input="three", previous_response_id=second["id"])
    assert third.status_code == 200
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("SELECT", "WITH RECURSIVE", "\n"))]
    assert not any("RECURSIVE" in sql for sql in reads), reads
    assert any(sql.startswith("SELECT 1 FROM conversations_app_storedresponse WHERE") for sql in reads), reads
    answer = "Hello from the fake upstream."
    assert [m["content"] for m in fake_openai.last.json["messages"]] == ["one", answer, "two", answer, "three"]


def test_the_upstream_is_given_the_same_context_kept_or_read(api, fake_openai, memory):
    last = None
    for turn in range(4):
        body = {"model": "gpt-test", "input": f"turn {turn}"}
        if last:
            body["previous_response_id"] = last
        last = api.create(**body).json()["id"]
    api.create(model="gpt-test", input="next", previous_response_id=last)
    from_memory = fake_openai.last.json
    memory.forget(last)
    api.create(model="gpt-test", input="next", previous_response_id=last)
    assert fake_openai.last.json == from_memory


def _kept_chain(api, memory) -> str:
    """A chain of two turns, the second kept (a chain's first turn is not): the second's id."""
    first = api.create(model="gpt-test", input="one").json()
    assert memory.recall(first["id"], "") is None
    second = api.create(model="gpt-test", input="two", previous_response_id=first["id"]).json()
    assert memory.recall(second["id"], "") is not None
    return second["id"]


def test_a_kept_response_deleted_since_cannot_be_continued(api, fake_openai, memory):
    kept = _kept_chain(api, memory)
    # As another worker (or instance) would: straight in the database.
    StoredResponse.objects.filter(pk=kept).update(deleted_at="2026-01-01T00:00:00Z")
    follow = api.create(model="gpt-test", input="three", previous_response_id=kept)
    assert follow.status_code == 400
    assert follow.json()["error"]["code"] == "previous_response_not_found"
    assert memory.recall(kept, "") is None  # and no longer kept


def test_a_kept_response_whose_conversation_was_purged_cannot_be_continued(api, fake_openai, memory):
    kept = _kept_chain(api, memory)
    Conversation.objects.all().delete()
    follow = api.create(model="gpt-test", input="three", previous_response_id=kept)
    assert follow.json()["error"]["code"] == "previous_response_not_found"
    assert StoredResponse.objects.count() == 0 and Item.objects.count() == 0


def test_another_owner_is_not_served_a_kept_chain(api, memory):
    kept = _kept_chain(api, memory)
    assert store.get_chain(kept, owner="someone-else") is None
    assert store.get_chain(kept, owner="") == memory.recall(kept, "")


def test_unstored_and_unwritten_turns_are_not_kept(api, fake_openai, memory, monkeypatch):
    first = api.create(model="gpt-test", input="stored").json()["id"]
    api.create(model="gpt-test", input="not stored", store=False, previous_response_id=first)
    assert memory.recall(first, "") is not None  # read by the turn above, and that turn not kept
    assert len(memory) == 1

    def refuse(*args, **kwargs):
        raise DatabaseError("the database is down")

    original_write, original_save = turn_statements.write_turn, type(store.inner).save_turn

    monkeypatch.setattr(turn_statements, "write_turn", refuse)
    monkeypatch.setattr(type(store.inner), "save_turn", refuse)
    api.create(model="gpt-test", input="not written", previous_response_id=first)
    # A turn stored would have replaced its parent's entry.
    assert memory.recall(first, "") is not None
    assert len(memory) == 1
    # The database answers again: the deferred write lands (here, not in a later test), and is not
    # kept either: only a turn settled with its write is.
    monkeypatch.setattr(turn_statements, "write_turn", original_write)
    monkeypatch.setattr(type(store.inner), "save_turn", original_save)
    assert worker_lifecycle.retry_deferred() == 0
    assert StoredResponse.objects.filter(previous_response_id=first).count() == 1
    assert memory.recall(first, "") is not None and len(memory) == 1


def test_a_turn_of_an_api_conversation_is_not_kept(api, fake_openai, memory):
    conversation = api.post("/v1/conversations", {}).json()
    response = api.create(model="gpt-test", input="hello", conversation=conversation["id"])
    assert response.status_code == 200
    assert len(memory) == 0
