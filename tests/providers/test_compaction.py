"""Compaction on every provider type: `POST /v1/responses/compact`, the items it returns starting a
new chain, and `context_management` thresholds on create (responses_app/compaction.py).

What each upstream received is asserted on the fakes' recorded requests: the summarisation pass
(the prompt and the transcript), then, on later turns, the summary instead of the compacted history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from conversations_app.models import Item, StoredResponse
from responses_app.compaction import SUMMARY_HEADER, SUMMARY_PROMPT
from tests.conftest import ApiClient, sse_events
from tests.contract import validate, validate_against_sdk, validate_against_spec
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.providers.harness import KINDS, Fakes, expected_usage, final_response, output_text, providers_config

TRANSLATING = ["openai-chat", "azure", "anthropic", "google"]
PROMPT_START = "You are compacting a conversation between a user and an AI assistant"
SUMMARY = "The user plans a trip to Paris in May; the weather tool said 22 degrees."

HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Plan a trip to Paris."},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure, when do you go?"}]},
    {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_w1", "output": "22 degrees and sunny"},
    {"role": "user", "content": "In May."},
]


def compact(api: ApiClient, **body: Any) -> Any:
    return api.post("/v1/responses/compact", body)


def check_compacted(body: dict[str, Any]) -> None:
    """The CompactedResponse against the spec, and each item against the SDK's own type for it.

    The pinned SDK types `CompactedResponse.output` as `ResponseOutputItem`, which has no user
    message, so its strict validation refuses the shape OpenAI documents (user messages, then the
    compaction item); the spec's `ItemField` has them, and the SDK's input message type fits them."""
    validate_against_spec("CompactResource", body)
    assert body["object"] == "response.compaction" and body["id"].startswith("resp_")
    *users, item = body["output"]
    for message in users:
        validate_against_sdk("ResponseInputMessageItem", message)
        assert message["role"] == "user"
    validate_against_sdk("ResponseCompactionItem", item)


def sent_text(fake: Any, index: int = -1) -> str:
    """Everything one recorded upstream request carried, as text to search."""
    return json.dumps(fake.requests[index].json, ensure_ascii=False)


@pytest.mark.parametrize("kind", TRANSLATING)
def test_compact_summarises_with_the_model_and_its_output_starts_a_new_chain(api: ApiClient, fakes: Fakes, kind: str):
    spec = KINDS[kind]
    fake = spec.fake(fakes)
    fake.script(spec.text(SUMMARY))
    response = compact(api, model=spec.model, input=HISTORY, instructions="You are a travel agent.")
    assert response.status_code == 200, response.content
    body = response.json()
    check_compacted(body)
    users, item = body["output"][:-1], body["output"][-1]
    assert [u["content"] for u in users] == [[{"type": "input_text", "text": "Plan a trip to Paris."}],
                                             [{"type": "input_text", "text": "In May."}]]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert SUMMARY not in item["encrypted_content"]  # sealed, not merely encoded
    assert body["usage"] == expected_usage(spec.usage)  # the pass's real usage
    # The pass: the summarisation prompt, and the whole context written out, tool calls and all.
    [pass_request] = fake.requests
    assert spec.upstream_model(pass_request) == UPSTREAM[spec.model]
    asked = sent_text(fake)
    for said in (PROMPT_START, "Sure, when do you go?", "get_weather", "22 degrees and sunny",
                 "You are a travel agent."):
        assert said in asked, said
    assert "tools" not in pass_request.json and "tool_choice" not in pass_request.json
    assert StoredResponse.objects.count() == 0  # nothing stored

    # A new chain from the output: the upstream gets the user messages and the summary, not the history.
    fake.script(spec.text("Pack light."))
    follow = api.post("/v1/responses", {"model": spec.model, "input": [
        *body["output"], {"role": "user", "content": "What should I pack?"}]})
    assert follow.status_code == 200, follow.content
    assert output_text(follow.json()) == "Pack light."
    received = sent_text(fake)
    for said in ("Plan a trip to Paris.", "In May.", json.dumps(SUMMARY_HEADER)[1:30], SUMMARY, "What should I pack?"):
        assert said in received, said
    for gone in ("Sure, when do you go?", "22 degrees and sunny", PROMPT_START, item["encrypted_content"]):
        assert gone not in received, gone
    # Stored as the client sent it: the item, sealed.
    stored = list(Item.objects.filter(response_id=follow.json()["id"], kind=0).order_by("position")
                  .values_list("data", flat=True))
    assert stored[2] == item


UPSTREAM = {"chat-model": "gpt-upstream", "azure-model": "my-deployment", "claude": "claude-upstream",
            "gemini": "gemini-upstream", "responses-model": "gpt-responses-upstream"}


def test_compact_on_a_responses_upstream_is_its_own_compact_endpoint_kept_opaque(api: ApiClient, fakes: Fakes):
    fakes.responses.script(resp.Compacted(encrypted_content="gAAAAupstream-state", input_tokens=50,
                                          output_tokens=9))
    response = compact(api, model="responses-model", input=HISTORY, instructions="Travel agent.",
                       prompt_cache_key="trip-1", service_tier="auto")
    assert response.status_code == 200, response.content
    body = response.json()
    check_compacted(body)
    [sent] = fakes.responses.requests
    assert sent.path == "/v1/responses/compact"
    assert sent.json["model"] == "gpt-responses-upstream" and sent.json["instructions"] == "Travel agent."
    assert (sent.json["prompt_cache_key"], sent.json["service_tier"]) == ("trip-1", "auto")
    assert [i.get("type", "message") for i in sent.json["input"]] == [
        "message", "message", "function_call", "function_call_output", "message"]
    assert body["output"][-1] == {"id": "cmp_up1", "type": "compaction", "encrypted_content": "gAAAAupstream-state"}
    assert body["usage"] == expected_usage({"input_tokens": 50, "output_tokens": 9})

    # The upstream's item goes back to it verbatim on the new chain (the fake refuses items it did not make).
    fakes.responses.script(resp.Reply(text="Pack light."))
    follow = api.post("/v1/responses", {"model": "responses-model",
                                        "input": [*body["output"], {"role": "user", "content": "Pack?"}]})
    assert follow.status_code == 200, follow.content
    assert fakes.responses.last.json["input"][-2] == body["output"][-1]


def test_compact_loads_the_previous_response_chain_as_create_does(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text="Sure, when do you go?"), chat.Reply(text="May is lovely."),
                      chat.Reply(text=SUMMARY))
    first = api.post("/v1/responses", {"model": "chat-model", "input": "Plan a trip to Paris."}).json()
    second = api.post("/v1/responses", {"model": "chat-model", "input": "In May.",
                                        "previous_response_id": first["id"]}).json()
    body = compact(api, model="chat-model", previous_response_id=second["id"]).json()
    check_compacted(body)
    assert [u["content"][0]["text"] for u in body["output"][:-1]] == ["Plan a trip to Paris.", "In May."]
    asked = sent_text(fakes.chat)
    assert "Sure, when do you go?" in asked and "May is lovely." in asked
    # With input too: the chain, then the input.
    fakes.chat.script(chat.Reply(text=SUMMARY))
    body = compact(api, model="chat-model", previous_response_id=second["id"], input="Also Lyon?").json()
    assert [u["content"][0]["text"] for u in body["output"][:-1]] == ["Plan a trip to Paris.", "In May.", "Also Lyon?"]
    missing = compact(api, model="chat-model", previous_response_id="resp_nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "previous_response_not_found")


def test_a_chain_compacted_twice_keeps_every_user_message_and_only_the_last_summary(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text="first summary"))
    once = compact(api, model="chat-model", input=HISTORY).json()
    fakes.chat.script(chat.Reply(text="second summary"))
    twice = compact(api, model="chat-model", input=[*once["output"], {"role": "user", "content": "Also Lyon?"}]).json()
    assert "first summary" in sent_text(fakes.chat)  # the earlier summary is summarised again
    assert [u["content"][0]["text"] for u in twice["output"][:-1]] == ["Plan a trip to Paris.", "In May.", "Also Lyon?"]
    fakes.chat.script(chat.Reply(text="ok"))
    api.post("/v1/responses", {"model": "chat-model", "input": [*once["output"], *twice["output"]]})
    received = sent_text(fakes.chat)
    assert "second summary" in received and "first summary" not in received


def test_the_gateways_item_given_to_a_responses_upstream_becomes_the_summary(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text=SUMMARY))
    body = compact(api, model="chat-model", input=HISTORY).json()
    fakes.responses.script(resp.Reply(text="ok"))
    follow = api.post("/v1/responses", {"model": "responses-model", "input": body["output"]})
    assert follow.status_code == 200, follow.content
    sent = fakes.responses.last.json["input"]
    assert [i["role"] for i in sent] == ["user", "user", "user"]
    assert sent[-1]["content"] == [{"type": "input_text", "text": SUMMARY_HEADER + SUMMARY}]


def _sealed_output(api: ApiClient, fakes: Fakes) -> list[dict[str, Any]]:
    fakes.chat.script(chat.Reply(text=SUMMARY))
    output: list[dict[str, Any]] = compact(api, model="chat-model", input=HISTORY).json()["output"]
    fakes.chat.reset()
    return output


def _tampered(content: str) -> str:
    middle = len(content) // 2
    return content[:middle] + ("A" if content[middle] != "A" else "B") + content[middle + 1:]


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/responses/compact"])
def test_a_tampered_item_is_refused_and_nothing_is_stored_or_sent(api: ApiClient, fakes: Fakes, path: str):
    *users, item = _sealed_output(api, fakes)
    rows = (StoredResponse.objects.count(), Item.objects.count())
    for content in (_tampered(item["encrypted_content"]), item["encrypted_content"] + "x",
                    item["encrypted_content"][:40], "gwcmp1.not-base64!"):
        refused = api.post(path, {"model": "chat-model", "input": [*users, {**item, "encrypted_content": content}]})
        assert refused.status_code == 400, refused.content
        error = refused.json()["error"]
        assert (error["param"], error["code"], error["type"]) == ("input[2]", "invalid_encrypted_content",
                                                                   "invalid_request_error")
        assert "cannot be opened" in error["message"]
    assert (StoredResponse.objects.count(), Item.objects.count()) == rows
    assert fakes.chat.requests == []


def test_an_upstreams_own_item_is_refused_by_a_translating_provider(api: ApiClient, fakes: Fakes):
    foreign = {"type": "compaction", "id": "cmp_x", "encrypted_content": "gAAAAopenai-made"}
    for path in ("/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens"):
        refused = api.post(path, {"model": "claude", "input": [{"role": "user", "content": "hi"}, foreign]})
        assert refused.status_code == 400, (path, refused.content)
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("input[1]", "invalid_encrypted_content")
        assert "not sealed by this gateway" in error["message"]
    assert fakes.anthropic.requests == []


def test_malformed_compaction_items_and_compact_bodies_are_400s(api: ApiClient, fakes: Fakes):
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "chat-model", "input": [{"type": "compaction"}]}, "input[0].encrypted_content"),
        ({"model": "chat-model", "input": [{"type": "compaction", "encrypted_content": 5}]},
         "input[0].encrypted_content"),
        ({"model": "chat-model", "input": [{"type": "compaction", "encrypted_content": ""}]},
         "input[0].encrypted_content"),
        ({"input": "x"}, "model"),
        ({"model": "chat-model"}, "input"),
        ({"model": "chat-model", "input": 5}, "input"),
        ({"model": "chat-model", "input": []}, "input"),
        ({"model": "chat-model", "input": "x", "instructions": 5}, "instructions"),
        ({"model": "nope", "input": "x"}, "model"),
    ]
    for body, param in cases:
        refused = api.post("/v1/responses/compact", body)
        assert refused.status_code == 400, (body, refused.content)
        assert refused.json()["error"]["param"] == param, body
    assert api.post("/v1/responses/compact", b"{not json").status_code == 400
    assert api.client.get("/v1/responses/compact").status_code == 405
    assert fakes.chat.requests == []


def test_unknown_compact_parameters_are_accepted_and_reach_a_responses_upstream(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text=SUMMARY))
    assert compact(api, model="chat-model", input="x", a_future_knob=1).status_code == 200
    fakes.responses.script(resp.Compacted())
    compact(api, model="responses-model", input="x", a_future_knob=1)
    # This upstream refuses parameters it does not know: its 400 is the client's, as create's would be.
    assert fakes.responses.last.json["a_future_knob"] == 1


@pytest.mark.parametrize(("status", "expected"), [(429, 429), (500, 502), (400, 400)])
def test_an_upstream_failure_of_the_pass_is_its_status(api: ApiClient, fakes: Fakes, status: int, expected: int):
    fakes.chat.script(chat.Fail(status, "nope"))
    refused = compact(api, model="chat-model", input=HISTORY)
    assert refused.status_code == expected, refused.content


# --- context_management thresholds ----------------------------------------------------------

BIG_RESULT = "The file says: " + " ".join(f"line {n} of the report is long" for n in range(400))
THRESHOLD = [{"type": "compaction", "compact_threshold": 1000}]
READ = {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}


def _tool_loop_to_the_big_result(api: ApiClient, fakes: Fakes) -> tuple[str, dict[str, Any]]:
    """A first turn that calls a tool, and the tool output (well over 1,000 tokens) to send next."""
    fakes.chat.script(chat.Reply(text="", tool_calls=[{"id": "call_r1", "name": "read_file", "arguments": "{}"}]))
    first = api.post("/v1/responses", {"model": "chat-model", "input": "Read the report.", "tools": [READ]}).json()
    return first["id"], {"type": "function_call_output", "call_id": "call_r1", "output": BIG_RESULT}


def _answer(response: Any, stream: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Response object, and the stream's events (each validated) when it streamed."""
    assert response.status_code == 200, getattr(response, "content", b"")
    if not stream:
        return response.json(), []
    events = sse_events(response)
    for event in events:
        _check_event(event)
    return events[-1]["response"], events


def _check_event(event: dict[str, Any]) -> None:
    if event["type"] == "response.compaction.compacting":
        # The SDK's ResponseCompactionCompactingEvent; the spec file has no schema for it yet.
        validate_against_sdk("ResponseStreamEvent", event)
    else:
        validate("ResponseStreamEvent", event)


@pytest.mark.parametrize("stream", [False, True])
def test_a_context_past_the_threshold_is_compacted_before_the_answer(api: ApiClient, fakes: Fakes, stream: bool):
    first_id, result = _tool_loop_to_the_big_result(api, fakes)
    fakes.chat.script(chat.Reply(text=SUMMARY, prompt_tokens=1500, completion_tokens=40),
                      chat.Reply(text="The report is fine.", prompt_tokens=60, completion_tokens=8))
    response = api.post("/v1/responses", {"model": "chat-model", "input": [result], "previous_response_id": first_id,
                                          "tools": [READ], "context_management": THRESHOLD, "stream": stream})
    body, events = _answer(response, stream)
    validate("Response", body)
    item, message = body["output"]
    assert item["type"] == "compaction" and message["type"] == "message"
    assert output_text(body) == "The report is fine."
    assert body["context_management"] == THRESHOLD
    # The turn's usage is the pass's and the answer's.
    assert body["usage"] == expected_usage({"input_tokens": 1560, "output_tokens": 48})
    summarised, answered = fakes.chat.requests[1:]
    assert PROMPT_START in sent_text(fakes.chat, 1) and BIG_RESULT[:200] in sent_text(fakes.chat, 1)
    # The answer is made on the compacted context: the user's message and the summary.
    assert answered.json["messages"] == [
        {"role": "user", "content": "Read the report."},
        {"role": "user", "content": SUMMARY_HEADER + SUMMARY}]
    assert answered.json["tools"][0]["function"]["name"] == "read_file"
    assert "tools" not in summarised.json
    if stream:
        kinds = [(e["type"], e.get("output_index")) for e in events[2:5]]
        assert kinds == [("response.output_item.added", 0), ("response.compaction.compacting", 0),
                         ("response.output_item.done", 0)]
        assert events[3]["item_id"] == item["id"] and events[2]["item"] == events[4]["item"] == item
    # Stored so: the output begins with the item, and a later turn continues from the summary.
    stored = StoredResponse.objects.get(id=body["id"])
    assert (stored.input_tokens, stored.output_tokens) == (1560, 48)
    fakes.chat.script(chat.Reply(text="You're welcome."))
    later = api.post("/v1/responses", {"model": "chat-model", "input": "Thanks!", "previous_response_id": body["id"],
                                       "context_management": THRESHOLD})
    assert later.status_code == 200 and [i["type"] for i in later.json()["output"]] == ["message"]
    assert fakes.chat.last.json["messages"] == [
        {"role": "user", "content": "Read the report."},
        {"role": "user", "content": SUMMARY_HEADER + SUMMARY},
        {"role": "assistant", "content": "The report is fine."},
        {"role": "user", "content": "Thanks!"}]
    replayed = api.get(f"/v1/responses/{body['id']}")
    assert replayed.json()["output"] == body["output"]
    # Its stream replayed announces the item as the live stream did.
    again = sse_events(api.get(f"/v1/responses/{body['id']}", stream="true"))
    for event in again:
        _check_event(event)
    assert [(e["type"], e.get("output_index")) for e in again[2:5]] == [
        ("response.output_item.added", 0), ("response.compaction.compacting", 0), ("response.output_item.done", 0)]
    assert again[-1]["response"]["output"] == body["output"]


def test_a_context_under_the_threshold_is_not_compacted(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text="hi"))
    body = api.post("/v1/responses", {"model": "chat-model", "input": "hello", "context_management": THRESHOLD}).json()
    assert [i["type"] for i in body["output"]] == ["message"] and len(fakes.chat.requests) == 1


@pytest.mark.parametrize("kind", ["anthropic", "google"])
def test_threshold_compaction_on_other_translating_providers(api: ApiClient, fakes: Fakes, kind: str):
    spec = KINDS[kind]
    fake = spec.fake(fakes)
    fake.script(spec.text(SUMMARY), spec.text("Done."))
    body = final_response(api.post("/v1/responses", {"model": spec.model, "input": [
        {"role": "user", "content": "Summarise this."}, {"role": "assistant", "content": BIG_RESULT},
        {"role": "user", "content": "Go on."}], "context_management": THRESHOLD, "stream": True}), True)
    assert [i["type"] for i in body["output"]] == ["compaction", "message"]
    received = sent_text(fake)
    assert SUMMARY in received and BIG_RESULT[:200] not in received and "Go on." in received


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_upstream_is_given_context_management_and_compacts_itself(api: ApiClient, fakes: Fakes,
                                                                              stream: bool):
    fakes.responses.script(resp.Reply(text="Fine."))
    response = api.post("/v1/responses", {"model": "responses-model", "input": BIG_RESULT,
                                          "context_management": THRESHOLD, "stream": stream})
    body, events = _answer(response, stream)
    validate("Response", body)
    assert fakes.responses.last.json["context_management"] == THRESHOLD
    assert len(fakes.responses.requests) == 1  # no pass of the gateway's own
    assert body["output"][0] == resp.compaction_item(resp.Compacted())
    if stream:
        assert [e["type"] for e in events[2:5]] == ["response.output_item.added", "response.compaction.compacting",
                                                    "response.output_item.done"]
    fakes.responses.script(resp.Reply(text="ok"))
    later = api.post("/v1/responses", {"model": "responses-model", "input": "next", "previous_response_id": body["id"]})
    assert later.status_code == 200, later.content
    assert resp.compaction_item(resp.Compacted()) in fakes.responses.last.json["input"]


@pytest.mark.parametrize(("value", "param"), [
    ([{"type": "truncation"}], "context_management[0].type"),
    ([{"type": "compaction", "compact_threshold": 999}], "context_management[0].compact_threshold"),
    ([{"type": "compaction", "compact_threshold": "1000"}], "context_management[0].compact_threshold"),
    ([], "context_management"),
    ({"type": "compaction"}, "context_management"),
])
def test_context_management_is_validated(api: ApiClient, fakes: Fakes, value: Any, param: str):
    refused = api.post("/v1/responses", {"model": "chat-model", "input": "x", "context_management": value})
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["param"] == param
    assert fakes.chat.requests == []


def test_an_item_sealed_under_a_rotated_out_key_opens_while_that_key_is_listed(api: ApiClient, fakes: Fakes,
                                                                              settings: Any):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_COMPACTION_KEYS = [old]
    output = _sealed_output(api, fakes)
    settings.GATEWAY_COMPACTION_KEYS = [new, old]
    fakes.chat.script(chat.Reply(text="ok"))
    assert api.post("/v1/responses", {"model": "chat-model", "input": output}).status_code == 200
    assert SUMMARY in sent_text(fakes.chat)
    settings.GATEWAY_COMPACTION_KEYS = [new]
    refused = api.post("/v1/responses", {"model": "chat-model", "input": output})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_encrypted_content")


def test_the_documented_summarisation_prompt_is_the_one_sent():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text()
    assert f"```text\n{SUMMARY_PROMPT}\n```" in docs
    assert SUMMARY_HEADER.split("\n")[0] in (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()


def test_the_demo_model_compacts_too(api: ApiClient, fakes: Fakes, settings: Any):
    settings.GATEWAY = providers_config(fakes, provider_overrides={"demo": {"type": "demo"}},
                                        models=[{"name": "demo", "provider": "demo"}])
    body = compact(api, model="demo", input=HISTORY).json()
    check_compacted(body)
    follow = api.post("/v1/responses", {"model": "demo", "input": [*body["output"], {"role": "user",
                                                                                     "content": "Pack?"}]})
    assert follow.status_code == 200 and "Pack?" in output_text(follow.json())
