"""manage.py export_conversations: JSON lines per conversation or per turn, items in order, filters,
streamed to stdout or a file."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations_app.models import Conversation, StoredResponse
from tests.conftest import ApiClient


def _export(*args: str) -> tuple[list[dict[str, Any]], str]:
    out, err = StringIO(), StringIO()
    call_command("export_conversations", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def _text(item: dict[str, Any]) -> str:
    content = item["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


@pytest.fixture
def stored(api: ApiClient) -> dict[str, Any]:
    first = api.create(model="gpt-test", input="My name is Ada.").json()
    second = api.create(model="gpt-test", input="What is my name?", previous_response_id=first["id"]).json()
    other = api.create(model="demo", input="Hello demo").json()
    conversation = api.post("/v1/conversations", {"items": [{"role": "user", "content": "added first"}]}).json()
    turn = api.create(model="gpt-test", input="in a conversation", conversation=conversation["id"]).json()
    return {"first": first, "second": second, "other": other, "conversation": conversation["id"], "turn": turn}


def test_one_line_per_conversation_with_its_turns_and_items_in_order(stored: dict[str, Any]):
    lines, err = _export()
    assert "exported 3 conversation(s), 3 line(s)" in err
    chain = next(line for line in lines if line["kind"] == "chain" and len(line["turns"]) == 2)
    assert chain["object"] == "conversation" and chain["owner"] == ""
    assert [t["id"] for t in chain["turns"]] == [stored["first"]["id"], stored["second"]["id"]]
    assert chain["turns"][1]["previous_response_id"] == stored["first"]["id"]
    assert [_text(i) for i in chain["turns"][0]["input"]] == ["My name is Ada."]
    assert chain["turns"][0]["output"][0]["type"] == "message"
    assert chain["turns"][0]["status"] == "completed" and chain["turns"][0]["model"] == "gpt-test"
    assert set(chain["turns"][0]["usage"]) == {"input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"}
    assert chain["created_at"].endswith("Z")

    api_line = next(line for line in lines if line["kind"] == "api")
    assert api_line["id"] == stored["conversation"]
    assert [t["id"] for t in api_line["turns"]] == [stored["turn"]["id"]] and "input" not in api_line["turns"][0]
    order = [(entry["response_id"], entry["item"]["type"]) for entry in api_line["items"]]
    assert order[0] == (None, "message") and _text(api_line["items"][0]["item"]) == "added first"
    assert order[1:] == [(stored["turn"]["id"], "message"), (stored["turn"]["id"], "message")]


def test_one_line_per_turn(stored: dict[str, Any]):
    lines, _ = _export("--per", "turn")
    assert [line["object"] for line in lines] == ["turn"] * 4
    by_id = {line["id"]: line for line in lines}
    assert by_id[stored["turn"]["id"]]["conversation_kind"] == "api"
    assert [_text(i) for i in by_id[stored["turn"]["id"]]["input"]] == ["in a conversation"]
    assert by_id[stored["second"]["id"]]["conversation_id"] == by_id[stored["first"]["id"]]["conversation_id"]


def test_filters(stored: dict[str, Any]):
    assert [len(line["turns"]) for line in _export("--model", "demo")[0]] == [1]
    assert _export("--owner", "someone-else")[0] == []
    chain_id = StoredResponse.objects.get(pk=stored["first"]["id"]).conversation_id
    assert [line["id"] for line in _export("--conversation", chain_id)[0]] == [chain_id]
    Conversation.objects.filter(pk=chain_id).update(created_at=timezone.now() - timedelta(days=10),
                                                   updated_at=timezone.now() - timedelta(days=9))
    assert chain_id not in [line["id"] for line in _export("--since", "2d")[0]]
    assert [line["id"] for line in _export("--until", "5d")[0]] == [chain_id]
    with pytest.raises(CommandError, match="--since: expected a date"):
        _export("--since", "yesterday-ish")


def test_it_streams_to_a_file_with_a_few_queries_per_conversation(stored: dict[str, Any], tmp_path: Path):
    target = tmp_path / "export.jsonl"
    with CaptureQueriesContext(connection) as queries:
        _, err = _export("--output", str(target))
    assert "exported 3 conversation(s), 3 line(s) to " in err and "exported: 3/3 (100%)" in err
    assert [json.loads(line)["object"] for line in target.read_text().splitlines()] == ["conversation"] * 3
    # A count, the conversations, then two queries per conversation: never one per turn or item.
    assert len(queries) <= 2 + 2 * 3 + 2


def test_deleted_conversations_only_when_asked(stored: dict[str, Any], api: ApiClient):
    api.delete(f"/v1/conversations/{stored['conversation']}")
    assert stored["conversation"] not in [line["id"] for line in _export()[0]]
    line = next(line for line in _export("--include-deleted")[0] if line["id"] == stored["conversation"])
    assert line["deleted"] is True
