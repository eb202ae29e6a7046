"""`client.responses.compact()` with the official SDK against the gateway under real gunicorn (two
workers, a compaction key from the environment), on each provider type, then a new chain started
from its output; and a `context_management` threshold streamed to a strict client.

The pinned SDK types `CompactedResponse.output` as `ResponseOutputItem`, which has no user
message, so in strict mode it refuses the shape OpenAI documents and returns (user messages, then
the compaction item). The strict client therefore reads compact's raw answer, which is checked
against the spec and each item against the SDK's own type for it; `compact()` itself is called on a
client in the SDK's default mode, and what it returns is passed back as `input` unchanged, as
applications do.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.contract import validate, validate_against_sdk, validate_against_spec
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import FakeServer

pytestmark = pytest.mark.e2e

SUMMARY = "The user is planning a trip to Paris in May."
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Plan a trip to Paris."},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure, when do you go?"}]},
    {"role": "user", "content": "In May."},
]


@pytest.fixture
def clients(provider_gateway: GatewayProcess, provider_fakes: dict[str, FakeServer]) -> tuple[OpenAI, OpenAI]:
    """(strict, default): the SDK in strict validation mode, and in its default mode."""
    for fake in provider_fakes.values():
        fake.reset()
    url = provider_gateway.base_url
    return (OpenAI(base_url=url, api_key="sk-client", max_retries=0, _strict_response_validation=True),
            OpenAI(base_url=url, api_key="sk-client", max_retries=0))


def _wire(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


# (model, fake, the summary reply, the answer reply)
CASES = {
    "openai-chat": ("chat-model", "chat", chat.Reply(text=SUMMARY), chat.Reply(text="Pack light.")),
    "anthropic": ("claude", "anthropic", anth.Reply(text=SUMMARY), anth.Reply(text="Pack light.")),
    "google": ("gemini", "google", gem.Reply(text=SUMMARY), gem.Reply(text="Pack light.")),
    "openai-responses": ("responses-model", "responses", resp.Compacted(), resp.Reply(text="Pack light.")),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_compact_then_a_new_chain_from_its_output(clients, provider_fakes, kind):
    strict, default = clients
    model, fake_name, summary_step, answer_step = CASES[kind]
    fake = provider_fakes[fake_name]
    fake.script(summary_step)
    raw = strict.responses.with_raw_response.compact(model=model, input=HISTORY, instructions="Travel agent.",
                                                     extra_body={"a_future_knob": True} if kind != "openai-responses"
                                                     else None)
    body = json.loads(raw.text)
    validate_against_spec("CompactResource", body)
    *users, item = body["output"]
    assert [u["content"][0]["text"] for u in users] == ["Plan a trip to Paris.", "In May."]
    for message in users:
        validate_against_sdk("ResponseInputMessageItem", message)
    validate_against_sdk("ResponseCompactionItem", item)
    assert body["usage"]["total_tokens"] > 0

    # A new chain from the output, without previous_response_id, with the strict client.
    fake.script(answer_step)
    follow = strict.responses.create(model=model, input=[*body["output"], {"role": "user", "content": "Pack?"}])
    validate("Response", _wire(follow))
    assert follow.output_text == "Pack light."
    received = json.dumps(fake.last.json)
    assert "Sure, when do you go?" not in received and "Plan a trip to Paris." in received
    if kind == "openai-responses":
        assert item["encrypted_content"] in received  # the upstream's own item, back to it verbatim
    else:
        assert SUMMARY in received and item["encrypted_content"] not in received

    # The SDK's own compact() in its default mode: what it returns goes back as input as it is.
    fake.script(summary_step, answer_step)
    compacted = default.responses.compact(model=model, input=HISTORY)
    assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
    again = strict.responses.create(model=model, input=[*compacted.output, {"role": "user", "content": "Pack?"}])
    assert again.output_text == "Pack light."


def test_a_threshold_streamed_to_a_strict_client(clients, provider_fakes):
    strict, _ = clients
    big = " ".join(f"paragraph {n} of a long document" for n in range(600))
    provider_fakes["chat"].script(chat.Reply(text=SUMMARY), chat.Reply(text="Done."))
    events = list(strict.responses.create(
        model="chat-model", input=[{"role": "user", "content": "Read this."},
                                   {"role": "assistant", "content": big},
                                   {"role": "user", "content": "Now what?"}],
        context_management=[{"type": "compaction", "compact_threshold": 1000}], stream=True))
    types = [e.type for e in events]
    assert types[2:5] == ["response.output_item.added", "response.compaction.compacting", "response.output_item.done"]
    final = events[-1].response
    assert [item.type for item in final.output] == ["compaction", "message"] and final.output_text == "Done."
    assert big[:100] not in json.dumps(provider_fakes["chat"].last.json)
    # Continued with previous_response_id: the summary, not the long document.
    provider_fakes["chat"].script(chat.Reply(text="Sure."))
    strict.responses.create(model="chat-model", input="Thanks.", previous_response_id=final.id)
    received = json.dumps(provider_fakes["chat"].last.json)
    assert SUMMARY in received and big[:100] not in received
