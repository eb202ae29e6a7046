"""What today's clients send (Codex, the Agents SDK): parameters the gateway does not know, custom
and namespace tools, hosted tools, reasoning and other item types. Passed on verbatim to a
Responses-native upstream; translated (or left out by a documented rule) for the others, as the
upstream's received request shows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conversations_app.api_store import api_conversations
from conversations_app.models import Item
from tests.conftest import ApiClient, sse_events
from tests.fakes import anthropic_upstream as anth
from tests.fakes import gemini_upstream as gem
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.providers.harness import Fakes, final_response, output_text, providers_config

NAMESPACE = {"type": "namespace", "name": "crm", "description": "Customer records.", "tools": [
    {"type": "function", "name": "lookup", "description": "Find a customer.", "strict": False,
     "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}},
]}
CUSTOM = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to the workspace."}
FUNCTION = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
WEB_SEARCH = {"type": "web_search", "user_location": {"type": "approximate", "country": "FR"}}


def test_unknown_parameters_and_every_tool_reach_a_responses_upstream_verbatim(api: ApiClient, fakes: Fakes):
    fakes.responses.script(resp.Reply(text="ok"))
    tools: list[dict[str, Any]] = [FUNCTION, CUSTOM, NAMESPACE, WEB_SEARCH,
                                   {"type": "a_tool_from_the_future", "knob": [1, 2]}]
    body = {"model": "responses-model", "input": "hi", "tools": tools, "tool_choice": {"type": "custom",
                                                                                       "name": "apply_patch"},
            "client_metadata": {"turn": "1"}, "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "low", "summary": "auto"}, "prompt_cache_key": "k1", "brand_new_knob": True}
    response = api.post("/v1/responses", body)
    assert response.status_code == 200, response.content
    sent = fakes.responses.last.json
    assert sent["tools"] == tools
    assert sent["tool_choice"] == {"type": "custom", "name": "apply_patch"}
    for key in ("client_metadata", "include", "reasoning", "prompt_cache_key", "brand_new_knob"):
        assert sent[key] == body[key], key
    assert sent["store"] is False  # the gateway still owns storage
    # The Response echoes the tools the client declared.
    assert [tool["type"] for tool in response.json()["tools"]] == [t["type"] for t in tools]


@pytest.mark.parametrize("model", ["chat-model", "claude", "gemini"])
def test_translating_upstreams_get_namespaces_flattened_custom_tools_as_functions(api: ApiClient, fakes: Fakes,
                                                                                model: str):
    script = {"chat-model": lambda: fakes.chat.script(chat.Reply(text="ok")),
              "claude": lambda: fakes.anthropic.script(anth.Reply(text="ok")),
              "gemini": lambda: fakes.gemini.script(gem.Reply(text="ok"))}
    script[model]()
    response = api.post("/v1/responses", {"model": model, "input": "hi", "tools": [FUNCTION, CUSTOM, NAMESPACE],
                                          "client_metadata": {"x": "y"}})
    assert response.status_code == 200, response.content
    if model == "chat-model":
        sent = fakes.chat.last.json
        functions = {t["function"]["name"]: t["function"] for t in sent["tools"]}
    elif model == "claude":
        sent = fakes.anthropic.last.json
        functions = {t["name"]: {"parameters": t["input_schema"], **t} for t in sent["tools"]}
    else:
        sent = fakes.gemini.last.json
        functions = {f["name"]: {"parameters": f["parametersJsonSchema"], **f}
                     for f in sent["tools"][0]["functionDeclarations"]}
    assert set(functions) == {"get_weather", "apply_patch", "crm__lookup"}
    assert functions["apply_patch"]["parameters"]["required"] == ["input"]
    assert functions["crm__lookup"]["parameters"]["required"] == ["email"]
    assert "client_metadata" not in sent  # not a parameter these upstreams know


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["chat-model", "claude", "gemini"])
def test_calls_of_namespaced_and_custom_tools_reach_the_client_as_declared(api: ApiClient, fakes: Fakes,
                                                                          model: str, stream: bool):
    patch = "*** Begin Patch\n*** End Patch"
    if model == "chat-model":
        fakes.chat.script(chat.Reply(text="", tool_calls=[
            {"id": "call_1", "name": "crm__lookup", "arguments": json.dumps({"email": "a@b.c"})},
            {"id": "call_2", "name": "apply_patch", "arguments": json.dumps({"input": patch})}]))
    elif model == "claude":
        fakes.anthropic.script(anth.Reply(text="", tool_calls=[
            {"id": "call_1", "name": "crm__lookup", "input": {"email": "a@b.c"}},
            {"id": "call_2", "name": "apply_patch", "input": {"input": patch}}]))
    else:
        fakes.gemini.script(gem.Reply(text="", function_calls=[
            {"name": "crm__lookup", "args": {"email": "a@b.c"}}, {"name": "apply_patch", "args": {"input": patch}}]))
    response = api.post("/v1/responses", {"model": model, "input": "hi", "tools": [CUSTOM, NAMESPACE],
                                          "stream": stream})
    body = final_response(response, stream)
    lookup, apply = body["output"]
    assert (lookup["type"], lookup["name"], lookup["namespace"]) == ("function_call", "lookup", "crm")
    assert json.loads(lookup["arguments"]) == {"email": "a@b.c"}
    assert (apply["type"], apply["name"], apply["input"]) == ("custom_tool_call", "apply_patch", patch)
    assert "namespace" not in apply

    # The client answers both; the history goes back up in the upstream's own terms.
    follow = {"model": model, "previous_response_id": body["id"], "tools": [CUSTOM, NAMESPACE], "input": [
        {"type": "function_call_output", "call_id": lookup["call_id"], "output": "found"},
        {"type": "custom_tool_call_output", "call_id": apply["call_id"], "output": "applied"}]}
    {"chat-model": fakes.chat, "claude": fakes.anthropic, "gemini": fakes.gemini}[model].script(
        {"chat-model": chat.Reply(text="done"), "claude": anth.Reply(text="done"),
         "gemini": gem.Reply(text="done")}[model])
    assert api.post("/v1/responses", follow).status_code == 200
    text = json.dumps({"chat-model": fakes.chat, "claude": fakes.anthropic, "gemini": fakes.gemini}[model].last.json)
    assert "crm__lookup" in text and "apply_patch" in text and "found" in text and "applied" in text


def test_hosted_tools_are_mapped_where_a_provider_has_them_and_dropped_elsewhere(api: ApiClient, fakes: Fakes):
    fakes.anthropic.script(anth.Reply(text="ok"))
    response = api.post("/v1/responses", {"model": "claude", "input": "news?",
                                          "tools": [WEB_SEARCH, {"type": "file_search", "vector_store_ids": ["v"]}]})
    assert response.status_code == 200
    assert {"type": "web_search_20250305", "name": "web_search",
            "user_location": {"type": "approximate", "country": "FR"}} in fakes.anthropic.last.json["tools"]
    assert response["X-Gateway-Dropped-Tools"] == "file_search"

    fakes.gemini.script(gem.Reply(text="ok"))
    response = api.post("/v1/responses", {"model": "gemini", "input": "news?", "tools": [WEB_SEARCH]})
    assert fakes.gemini.last.json["tools"] == [{"google_search": {}}]
    assert "X-Gateway-Dropped-Tools" not in response

    fakes.chat.script(chat.Reply(text="ok"))
    response = api.post("/v1/responses", {"model": "chat-model", "input": "news?", "tools": [WEB_SEARCH, FUNCTION]})
    assert response["X-Gateway-Dropped-Tools"] == "web_search"
    assert [t["function"]["name"] for t in fakes.chat.last.json["tools"]] == ["get_weather"]


def test_unsupported_tools_error_policy_refuses_the_request(db: None, settings: Any, fakes: Fakes):
    settings.GATEWAY = providers_config(fakes, provider_overrides={"openai": {"unsupported_tools": "error"}})
    response = ApiClient().post("/v1/responses", {"model": "chat-model", "input": "x", "tools": [WEB_SEARCH]})
    assert response.status_code == 400
    assert "web_search" in response.json()["error"]["message"]
    assert fakes.chat.requests == []


def test_item_types_the_gateway_does_not_translate_are_kept_and_replayed_verbatim(api: ApiClient, fakes: Fakes):
    reasoning = {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "gAAAA-secret"}
    compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAA-compact"}
    fakes.responses.script(resp.Reply(text="ok"))
    first = api.post("/v1/responses", {"model": "responses-model", "input": [
        compaction, reasoning, {"role": "user", "content": "go on"}]}).json()
    sent = fakes.responses.last.json["input"]
    assert sent[0] == compaction and sent[1] == reasoning  # ids kept: reasoning items need theirs
    stored = list(Item.objects.filter(response_id=first["id"], kind=0).order_by("position").values_list("data",
                                                                                                       flat=True))
    assert stored[0] == compaction and stored[1] == reasoning
    # A translating upstream never sees them.
    fakes.chat.script(chat.Reply(text="ok"))
    api.post("/v1/responses", {"model": "chat-model", "input": [reasoning, {"role": "user", "content": "go on"}]})
    assert fakes.chat.last.json["messages"] == [{"role": "user", "content": "go on"}]
    # Except an upstream's compaction item: it holds the whole earlier context, which a translating
    # upstream cannot read, so leaving it out silently would answer without it (tests/responses/test_compaction.py).
    refused = api.post("/v1/responses", {"model": "chat-model", "input": [compaction, reasoning,
                                                                          {"role": "user", "content": "go on"}]})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "input[0]")
    assert len(fakes.chat.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_output_items_of_a_responses_upstream_come_back_whole_and_are_replayed(api: ApiClient, fakes: Fakes,
                                                                             stream: bool):
    reasoning = {"type": "reasoning", "id": "rs_77", "summary": [{"type": "summary_text", "text": "thinking"}],
                 "encrypted_content": "gAAAA-opaque"}
    search = {"type": "web_search_call", "id": "ws_9", "status": "completed",
              "action": {"type": "search", "query": "gateway"}}
    fakes.responses.script(resp.Reply(text="answer", items_before=[reasoning, search]))
    response = api.post("/v1/responses", {"model": "responses-model", "input": "q", "stream": stream,
                                          "tools": [WEB_SEARCH]})
    if stream:
        events = sse_events(response)
        body = events[-1]["response"]
        assert [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"] == [
            "reasoning", "web_search_call", "message"]
    else:
        body = response.json()
    assert body["output"][:2] == [reasoning, search]
    assert body["output"][2]["content"][0]["text"] == "answer"
    assert api.get(f"/v1/responses/{body['id']}").json()["output"][:2] == [reasoning, search]
    fakes.responses.script(resp.Reply(text="more"))
    api.post("/v1/responses", {"model": "responses-model", "previous_response_id": body["id"], "input": "and?"})
    replayed = fakes.responses.last.json["input"]
    assert replayed[1] == reasoning and replayed[2] == search


def test_a_namespaced_call_from_a_responses_upstream_keeps_its_namespace(api: ApiClient, fakes: Fakes):
    fakes.responses.script(resp.Reply(text="", tool_calls=[
        {"call_id": "c1", "name": "lookup", "namespace": "crm", "arguments": "{}"}]))
    body = final_response(api.post("/v1/responses", {"model": "responses-model", "input": "x", "stream": True,
                                                     "tools": [NAMESPACE]}), True)
    assert (body["output"][0]["name"], body["output"][0]["namespace"]) == ("lookup", "crm")


def test_repeated_item_ids_page_once_each(api: ApiClient, fakes: Fakes):
    fakes.chat.script(chat.Reply(text="ok"))
    items = [{"id": "msg_same", "role": "user", "content": f"part {i}"} for i in range(5)]
    created = api.post("/v1/responses", {"model": "chat-model", "input": items}).json()
    seen, after = [], None
    for _ in range(10):  # the SDK's auto-paging: after = the last id of the page
        page = api.get(f"/v1/responses/{created['id']}/input_items", limit=2, order="asc",
                       **({"after": after} if after else {})).json()
        seen += [item["content"][0]["text"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [f"part {i}" for i in range(5)]


def test_item_references_are_resolved_from_the_chain_and_unknown_ones_refused(api: ApiClient, fakes: Fakes):
    fakes.responses.script(resp.Reply(text="first answer"))
    first = api.post("/v1/responses", {"model": "responses-model", "input": [
        {"id": "msg_question", "role": "user", "content": "What is 2+2?"}]}).json()
    answer_id = first["output"][0]["id"]

    fakes.responses.script(resp.Reply(text="again"))
    second = api.post("/v1/responses", {"model": "responses-model", "previous_response_id": first["id"], "input": [
        {"type": "item_reference", "id": "msg_question"}, {"type": "item_reference", "id": answer_id}]})
    assert second.status_code == 200, second.content
    # The upstream (called with store: false) gets the items themselves, never a reference it cannot follow.
    sent = fakes.responses.last.json["input"]
    assert "item_reference" not in json.dumps(sent)
    assert [item.get("role") for item in sent] == ["user", "assistant", "user", "assistant"]
    listed = api.get(f"/v1/responses/{second.json()['id']}/input_items", order="asc").json()["data"]
    assert [item["type"] for item in listed] == ["message", "message"]
    assert listed[0]["content"][0]["text"] == "What is 2+2?"

    calls = len(fakes.responses.requests)
    refused = api.post("/v1/responses", {"model": "responses-model", "previous_response_id": first["id"],
                                         "input": [{"type": "item_reference", "id": "msg_nowhere"}]})
    assert refused.status_code == 400
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == ("item_not_found", "input[0]")
    assert len(fakes.responses.requests) == calls


def test_cached_only_web_search_is_not_turned_into_live_search(api: ApiClient, fakes: Fakes):
    """Codex sends `web_search` with `external_web_access: false` (cached results only): Anthropic's and
    Gemini's searches are live and billed per use, so that tool is dropped by policy, not mapped."""
    cached = {"type": "web_search", "external_web_access": False}
    fakes.anthropic.script(anth.Reply(text="ok"))
    response = api.post("/v1/responses", {"model": "claude", "input": "x", "tools": [cached, FUNCTION]})
    assert [t["name"] for t in fakes.anthropic.last.json["tools"]] == ["get_weather"]
    assert response["X-Gateway-Dropped-Tools"] == "web_search"
    fakes.gemini.script(gem.Reply(text="ok"))
    api.post("/v1/responses", {"model": "gemini", "input": "x", "tools": [cached]})
    assert "tools" not in fakes.gemini.last.json


def test_a_replayed_namespaced_call_keeps_its_namespace(api: ApiClient, fakes: Fakes):
    call = {"type": "function_call", "call_id": "call_ns", "name": "lookup", "namespace": "crm", "arguments": "{}"}
    history = [{"role": "user", "content": "find a@b.c"}, call,
               {"type": "function_call_output", "call_id": "call_ns", "output": "found"}]
    fakes.responses.script(resp.Reply(text="ok"))
    api.post("/v1/responses", {"model": "responses-model", "input": history, "tools": [NAMESPACE]})
    [sent] = [i for i in fakes.responses.last.json["input"] if i.get("type") == "function_call"]
    assert (sent["name"], sent["namespace"]) == ("lookup", "crm")
    fakes.chat.script(chat.Reply(text="ok"))
    api.post("/v1/responses", {"model": "chat-model", "input": history, "tools": [NAMESPACE]})
    [assistant] = [m for m in fakes.chat.last.json["messages"] if m.get("tool_calls")]
    assert assistant["tool_calls"][0]["function"]["name"] == "crm__lookup"


@pytest.mark.parametrize("stream", [False, True])
def test_a_search_anthropic_runs_itself_is_no_call_for_the_client(api: ApiClient, fakes: Fakes, stream: bool):
    fakes.anthropic.script(anth.Reply(text="The docs say hello.", server_blocks=[
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "gateway docs"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}]))
    body = final_response(api.post("/v1/responses", {"model": "claude", "input": "search", "stream": stream,
                                                     "tools": [WEB_SEARCH]}), stream)
    assert [item["type"] for item in body["output"]] == ["message"]
    assert output_text(body) == "The docs say hello."


# A valid value for every field of the pinned SDK's ResponseCreateParams. When an SDK upgrade adds a
# field, the first assertion below names it: add it here and see that it is accepted.
EVERY_PARAMETER: dict[str, Any] = {
    "model": "responses-model", "input": "hi", "instructions": "Be brief.", "previous_response_id": None,
    "store": True, "background": False, "background_options": {"completion_window": "soonest"},
    "access_programs": {"cyber": "standard"}, "context_management": [{"type": "compaction", "compact_threshold": 1000}],
    "image": {"context_compression": "auto"}, "include": ["reasoning.encrypted_content"], "max_output_tokens": 500,
    "max_tool_calls": 3, "metadata": {"k": "v"}, "moderation": {"model": "omni-moderation-latest"},
    "parallel_tool_calls": True, "prompt": {"id": "pmpt_1", "version": "2"}, "prompt_cache_key": "key",
    "prompt_cache_options": {"mode": "implicit"}, "prompt_cache_retention": "24h",
    "reasoning": {"effort": "low", "summary": "auto"}, "safety_identifier": "user-hash", "service_tier": "auto",
    "stream_options": {"include_obfuscation": False}, "temperature": 0.5, "text": {"verbosity": "low"},
    "tool_choice": "auto", "tools": [FUNCTION], "top_logprobs": 2, "top_p": 0.9, "truncation": "auto",
    "user": "u1",
}
# `conversation` must name a conversation that exists: the test creates one.
CREATED_BY_THE_TEST = {"conversation"}


@pytest.mark.parametrize("model", ["responses-model", "chat-model"])
def test_every_parameter_of_the_sdk_is_accepted(api: ApiClient, fakes: Fakes, model: str):
    from openai.types.responses.response_create_params import ResponseCreateParamsBase

    assert set(ResponseCreateParamsBase.__annotations__) - CREATED_BY_THE_TEST == set(EVERY_PARAMETER)
    fakes.responses.script(resp.Reply(text="ok"))
    fakes.chat.script(chat.Reply(text="ok"))
    conversation = api_conversations.create_conversation("", {}, []).id
    response = api.post("/v1/responses", {**EVERY_PARAMETER, "model": model, "conversation": {"id": conversation}})
    assert response.status_code == 200, response.content
    assert response.json()["conversation"] == {"id": conversation}
    if model == "responses-model":
        sent = fakes.responses.last.json
        for name in ("include", "max_tool_calls", "prompt", "prompt_cache_key", "reasoning", "service_tier",
                     "truncation", "context_management", "moderation", "top_logprobs", "safety_identifier"):
            assert sent[name] == EVERY_PARAMETER[name], name


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thought_signatures_go_back_on_the_calls_they_signed(api: ApiClient, fakes: Fakes, stream: bool):
    fakes.gemini.script(gem.Reply(text="", thought_signature="c2lnLTE=", function_calls=[
        {"name": "get_weather", "args": {}}, {"name": "get_weather", "args": {"again": True}}]))
    body = final_response(api.post("/v1/responses", {"model": "gemini", "input": "weather?", "tools": [FUNCTION],
                                                     "stream": stream}), stream)
    reasoning, first, second = body["output"]
    assert reasoning == {"id": reasoning["id"], "type": "reasoning", "summary": [],
                         "encrypted_content": "gemini-thought-signature:c2lnLTE="}
    assert (first["type"], second["type"]) == ("function_call", "function_call")

    # Chained, and as a client replays the whole history (Codex, the Agents SDK): signed again.
    outputs = [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
               for call in (first, second)]
    for follow in ({"previous_response_id": body["id"], "input": outputs},
                   {"input": [{"role": "user", "content": "weather?"}, *body["output"], *outputs]}):
        fakes.gemini.script(gem.Reply(text="Sunny."))
        assert api.post("/v1/responses", {"model": "gemini", "tools": [FUNCTION], **follow}).status_code == 200
        [model_turn] = [c for c in fakes.gemini.last.json["contents"] if c["role"] == "model"]
        assert [p.get("thoughtSignature") for p in model_turn["parts"]] == ["c2lnLTE=", None]

    # A Responses-native upstream never gets Gemini's signature (OpenAI could not read it).
    fakes.responses.script(resp.Reply(text="ok"))
    api.post("/v1/responses", {"model": "responses-model", "previous_response_id": body["id"], "input": outputs})
    assert "gemini-thought-signature" not in json.dumps(fakes.responses.last.json)


def test_gemini_3_gets_a_placeholder_for_calls_that_were_never_signed(db: None, settings: Any, fakes: Fakes):
    settings.GATEWAY = providers_config(fakes, models=[
        {"name": "gemini-3", "provider": "google", "provider_model_id": "gemini-3-pro-preview"},
        {"name": "gemini-2", "provider": "google", "provider_model_id": "gemini-2.5-flash"}])
    history = [{"role": "user", "content": "weather?"},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    for model, expected in (("gemini-3", "skip_thought_signature_validator"), ("gemini-2", None)):
        fakes.gemini.script(gem.Reply(text="Sunny."))
        response = ApiClient().post("/v1/responses", {"model": model, "input": history, "tools": [FUNCTION]})
        assert response.status_code == 200
        [model_turn] = [c for c in fakes.gemini.last.json["contents"] if c["role"] == "model"]
        assert model_turn["parts"][0].get("thoughtSignature") == expected
