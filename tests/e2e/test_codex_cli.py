"""The Codex CLI (npm `@openai/codex`, installed by scripts/test) against the gateway under gunicorn.

Codex runs in its default configuration apart from the model provider (tests/e2e/clients.py
writes the config.toml): `codex exec`, approval `never`, sandbox `read-only`. In that sandbox
Codex still runs commands (reading is allowed; it uses the bubblewrap it bundles when none is
installed, and only warns), so the tool round trip needs no sandbox change.

Every request Codex makes is a stream with `store: false` that carries the whole history, its
tools (functions, a `namespace` of functions, `web_search`), `include`, `reasoning`,
`prompt_cache_key` and `client_metadata`. Each test checks what Codex printed and what the fake
upstream behind the gateway received: passed through to a Responses upstream, mapped (namespace
flattened, hosted tools dropped or mapped, Codex's metadata kept to itself) for the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.clients import (
    MODELS,
    UPSTREAM_MODELS,
    CodexRun,
    Upstreams,
    codex_installed,
    config_yaml,
    run_codex,
    tool_names,
)
from tests.e2e.gunicorn import GatewayProcess
from tests.fakes import anthropic_upstream as anth
from tests.fakes import openai_responses_upstream as resp
from tests.fakes import openai_upstream as chat
from tests.fakes.server import Recorded

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMMAND = "echo gateway-ok"
# The functions Codex groups in its `multi_agent_v1` namespace tool.
NAMESPACE = "multi_agent_v1"
NAMESPACED = {"spawn_agent", "send_input", "wait_agent", "close_agent", "resume_agent"}
# What OpenAI and Anthropic accept as a function name.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    fakes = Upstreams()
    yield fakes
    fakes.close()


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams) -> Iterator[GatewayProcess]:
    if (missing := codex_installed()) is not None:
        pytest.fail(missing)
    with GatewayProcess(config_yaml(upstreams)) as gw:
        yield gw


Codex = Callable[[str, str], CodexRun]


@pytest.fixture
def codex(gateway: GatewayProcess, upstreams: Upstreams, tmp_path: Path) -> Codex:
    upstreams.reset()

    def run(kind: str, prompt: str) -> CodexRun:
        return run_codex(gateway.base_url, MODELS[kind], prompt, tmp_path / "codex-home", tmp_path / "work")

    return run


# --- scripting each upstream in its own format -------------------------------------------------

def _text(kind: str, text: str) -> Any:
    return {"responses": resp.Reply, "chat": chat.Reply, "anthropic": anth.Reply}[kind](text=text)


def _exec_call(kind: str) -> Any:
    arguments = {"cmd": COMMAND}
    if kind == "responses":
        return resp.Reply(text="", tool_calls=[{"call_id": "call_codex1", "name": "exec_command",
                                                "arguments": json.dumps(arguments)}])
    if kind == "chat":
        return chat.Reply(text="", tool_calls=[{"id": "call_codex1", "name": "exec_command",
                                                "arguments": json.dumps(arguments)}])
    return anth.Reply(text="", tool_calls=[{"id": "call_codex1", "name": "exec_command", "input": arguments}])


def _quoting(kind: str, prefix: str) -> Any:
    return {"responses": resp.Reply, "chat": chat.Reply, "anthropic": anth.Reply}[kind](
        text=prefix, quote_tool_result=True)


def _tool_result_sent(kind: str, body: dict[str, Any]) -> str:
    return {"responses": resp.last_tool_result, "chat": chat.last_tool_result,
            "anthropic": anth.last_tool_result}[kind](body)


def _tool_call_sent(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The replayed exec_command call of turn 1 in turn 2's request, as (call id, name, arguments)."""
    if kind == "responses":
        [call] = [i for i in body["input"] if i.get("type") == "function_call"]
        return {"id": call["call_id"], "name": call["name"], "arguments": json.loads(call["arguments"])}
    if kind == "chat":
        [call] = [c for m in body["messages"] for c in m.get("tool_calls") or []]
        return {"id": call["id"], "name": call["function"]["name"],
                "arguments": json.loads(call["function"]["arguments"])}
    [block] = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b["type"] == "tool_use"]
    return {"id": block["id"], "name": block["name"], "arguments": block["input"]}


def _upstream_name(gateway: GatewayProcess, upstreams: Upstreams, kind: str, function: str) -> str:
    """The name under which the gateway offers `function` of Codex's namespace to a Chat or Anthropic
    upstream (whatever flattening it uses), learnt from a request with that namespace alone."""
    namespace = {"type": "namespace", "name": NAMESPACE, "description": "Sub-agents.", "tools": [
        {"type": "function", "name": function, "description": "Close an agent.", "strict": False,
         "parameters": {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"],
                        "additionalProperties": False}}]}
    answer = requests.post(f"{gateway.base_url}/responses", timeout=30, headers={"Authorization": "Bearer sk-probe"},
                           json={"model": MODELS[kind], "input": "hi", "store": False, "tools": [namespace]})
    assert answer.status_code == 200, answer.text
    [name] = tool_names(upstreams.of(kind).last.json["tools"])
    upstreams.reset()
    return name


def _failure(run: CodexRun, requests: list[Recorded]) -> str:
    return f"{run}\n--- the upstream received {len(requests)} request(s)"


# --- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(MODELS))
def test_a_plain_turn(codex: Codex, upstreams: Upstreams, kind: str) -> None:
    fake = upstreams.of(kind)
    fake.script(_text(kind, f"Hi from the {kind} upstream."))
    run = codex(kind, "say hi")
    assert run.returncode == 0, _failure(run, fake.requests)
    assert f"Hi from the {kind} upstream." in run.stdout, run
    [sent] = fake.requests
    assert sent.json["model"] == UPSTREAM_MODELS[kind] and sent.json["stream"] is True
    assert "say hi" in json.dumps(sent.json)


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_tool_round_trip(codex: Codex, upstreams: Upstreams, kind: str) -> None:
    fake = upstreams.of(kind)
    fake.script(_exec_call(kind), _quoting(kind, "The command printed: "))
    run = codex(kind, f"Run `{COMMAND}` and tell me what it printed.")
    assert run.returncode == 0, _failure(run, fake.requests)
    # Codex ran the command (its log goes to stderr) ...
    assert COMMAND in run.stderr and "succeeded" in run.stderr, run
    # ... sent its output back in turn 2, next to the call it answers ...
    assert len(fake.requests) == 2, _failure(run, fake.requests)
    second = fake.requests[1].json
    assert _tool_call_sent(kind, second) == {"id": "call_codex1", "name": "exec_command",
                                             "arguments": {"cmd": COMMAND}}
    assert "gateway-ok" in _tool_result_sent(kind, second)
    # ... and printed the final answer, which quotes what the upstream received.
    assert "The command printed: " in run.stdout and "gateway-ok" in run.stdout, run


def test_the_responses_upstream_gets_codex_request_as_sent(codex: Codex, upstreams: Upstreams) -> None:
    """A Responses upstream speaks Codex's own API: tools, include, reasoning and metadata pass through."""
    run = codex("responses", "say hi")
    assert run.returncode == 0, _failure(run, upstreams.responses.requests)
    body = upstreams.responses.requests[0].json
    assert body["store"] is False and "previous_response_id" not in body
    [namespace] = [t for t in body["tools"] if t["type"] == "namespace"]
    assert namespace["name"] == NAMESPACE and {t["name"] for t in namespace["tools"]} == NAMESPACED
    assert [t for t in body["tools"] if t["type"] == "web_search"], body["tools"]
    assert "exec_command" in tool_names(body["tools"])
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"]["summary"] == "auto"
    assert body["prompt_cache_key"] and body["parallel_tool_calls"] is True and body["tool_choice"] == "auto"
    assert "thread_id" in body["client_metadata"], body["client_metadata"]


@pytest.mark.parametrize("kind", ["chat", "anthropic"])
def test_other_upstreams_get_codex_tools_as_plain_functions(codex: Codex, upstreams: Upstreams, kind: str) -> None:
    """Chat Completions and Anthropic have no namespaces: the namespace's functions are sent as
    functions of their own, under names both APIs accept; Codex's cached-only web search is not
    turned into the upstream's live search; Codex's client_metadata is not sent (Anthropic refuses unknown fields)."""
    fake = upstreams.of(kind)
    run = codex(kind, "say hi")
    assert run.returncode == 0, _failure(run, fake.requests)
    body = fake.requests[0].json
    if kind == "chat":
        assert all(t["type"] == "function" for t in body["tools"]), body["tools"]
        functions = body["tools"]
    else:
        # Anthropic's own web search is a server tool (`web_search_20250305` and later, named
        # `web_search`); every other tool must be a client tool with an input schema.
        functions = [t for t in body["tools"] if t.get("type", "custom") == "custom"]
        server = [t for t in body["tools"] if t not in functions]
        assert all(t["type"].startswith("web_search_") and t["name"] == "web_search" for t in server), server
        assert all("input_schema" in t for t in functions), functions
    names = tool_names(functions)
    assert all(FUNCTION_NAME.match(name) for name in names), names
    assert len(names) == len(set(names)), names
    assert "exec_command" in names
    for function in NAMESPACED:
        assert len([n for n in names if n == function or n.endswith(function)]) == 1, (function, names)
    assert "web_search" not in names  # a hosted tool is not offered as a function the client would run
    assert "client_metadata" not in body
    assert set(body.get("metadata") or {}) <= {"user_id"}, body.get("metadata")


def test_reasoning_and_hosted_tool_items_round_trip_through_codex(codex: Codex, upstreams: Upstreams) -> None:
    """Turn 1 answers with a reasoning item (encrypted_content, as `include` asked), a web_search_call
    and the exec_command call; Codex shows them and replays all three, unchanged, in turn 2."""
    web_search = {"type": "web_search_call", "id": "ws_up1", "status": "completed",
                  "action": {"type": "search", "query": "gateway docs"}}
    upstreams.responses.script(
        resp.Reply(text="", reasoning_summary="Running the command first.", encrypted_content="enc-opaque-1",
                   items_before=[web_search],
                   tool_calls=[{"call_id": "call_codex1", "name": "exec_command",
                                "arguments": json.dumps({"cmd": COMMAND})}]),
        resp.Reply(text="The command printed: ", quote_tool_result=True))
    run = codex("responses", f"Search, then run `{COMMAND}`.")
    assert run.returncode == 0, _failure(run, upstreams.responses.requests)
    assert "Running the command first." in run.stderr and "web search: gateway docs" in run.stderr, run
    assert "gateway-ok" in run.stdout, run
    assert len(upstreams.responses.requests) == 2
    replayed = [i for i in upstreams.responses.requests[1].json["input"] if i.get("type") != "message"]
    assert [i["type"] for i in replayed] == ["reasoning", "web_search_call", "function_call", "function_call_output"]
    reasoning, search = replayed[0], replayed[1]
    assert reasoning["encrypted_content"] == "enc-opaque-1"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Running the command first."}]
    assert {k: v for k, v in search.items() if k != "id"} == {k: v for k, v in web_search.items() if k != "id"}


def test_codex_default_reasoning_asks_claude_for_no_thinking(codex: Codex, upstreams: Upstreams) -> None:
    """Codex sends `reasoning: {summary: auto}` without an effort: an Anthropic upstream is not asked to think."""
    run = codex("anthropic", "say hi")
    assert run.returncode == 0, _failure(run, upstreams.anthropic.requests)
    body = upstreams.anthropic.requests[0].json
    assert "thinking" not in body and body["max_tokens"] == 4096


def test_codex_with_an_effort_gets_claude_thinking_and_replays_it(gateway: GatewayProcess, upstreams: Upstreams,
                                                                  tmp_path: Path) -> None:
    """With `model_reasoning_effort` set, Claude thinks (effort high: a 16,384-token budget); its
    thinking reaches Codex as a reasoning item, which Codex replays with the tool's output, and the
    signed thinking block opens the tool call's turn again, as Anthropic requires (the fake checks)."""
    upstreams.reset()
    upstreams.anthropic.script(
        anth.Reply(text="", thinking="Running the command first.", signature="sig-codex-1",
                   tool_calls=[{"id": "call_codex1", "name": "exec_command", "input": {"cmd": COMMAND}}]),
        _quoting("anthropic", "The command printed: "))
    run = run_codex(gateway.base_url, MODELS["anthropic"], f"Run `{COMMAND}` and tell me what it printed.",
                    tmp_path / "codex-home", tmp_path / "work", extra_args=["-c", 'model_reasoning_effort="high"'])
    requests = upstreams.anthropic.requests
    assert run.returncode == 0, _failure(run, requests)
    assert len(requests) == 2, _failure(run, requests)
    assert requests[0].json["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert "Running the command first." in run.stderr, run
    assert requests[1].json["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Running the command first.", "signature": "sig-codex-1"}
    assert "The command printed: " in run.stdout and "gateway-ok" in run.stdout, run


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_namespaced_tool_call_round_trip(codex: Codex, gateway: GatewayProcess, upstreams: Upstreams,
                                           kind: str) -> None:
    """The upstream calls `close_agent` of Codex's `multi_agent_v1` namespace (with an id no agent
    has). Codex routes the call to that tool only when it comes back as the namespace's function (a
    bare `close_agent` gets "unsupported call"): its error about the id shows the routing worked."""
    fake = upstreams.of(kind)
    arguments = {"target": "agent-nobody"}
    first: Any
    if kind == "responses":
        name = "close_agent"
        first = resp.Reply(text="", tool_calls=[{"call_id": "call_ns1", "name": name, "namespace": NAMESPACE,
                                                 "arguments": json.dumps(arguments)}])
    elif kind == "chat":
        name = _upstream_name(gateway, upstreams, kind, "close_agent")
        first = chat.Reply(text="", tool_calls=[{"id": "call_ns1", "name": name, "arguments": json.dumps(arguments)}])
    else:
        name = _upstream_name(gateway, upstreams, kind, "close_agent")
        first = anth.Reply(text="", tool_calls=[{"id": "call_ns1", "name": name, "input": arguments}])
    fake.script(first, _quoting(kind, "Closing said: "))
    run = codex(kind, "Close the agent agent-nobody.")
    assert run.returncode == 0, _failure(run, fake.requests)
    assert len(fake.requests) == 2, _failure(run, fake.requests)
    second = fake.requests[1].json
    # Turn 2 carries the result of Codex's own close_agent ...
    result = _tool_result_sent(kind, second)
    assert "invalid agent id agent-nobody" in result and "unsupported call" not in result, result
    assert "Closing said: invalid agent id agent-nobody" in run.stdout, run
    # ... and replays the call as the upstream made it (a name in its tool list; the namespace).
    assert _tool_call_sent(kind, second) == {"id": "call_ns1", "name": name, "arguments": arguments}
    if kind == "responses":
        [call] = [i for i in second["input"] if i.get("type") == "function_call"]
        assert call.get("namespace") == NAMESPACE, call


def test_an_anthropic_server_web_search_is_no_tool_call_for_codex(codex: Codex, upstreams: Upstreams) -> None:
    """Codex's default `web_search` (cached only) is not turned into Anthropic's live search, but a
    client asking for live search gets it; when Anthropic runs a search, the answer streams
    `server_tool_use` (with `input_json_delta`s, like a client tool) and `web_search_tool_result`
    blocks before the text: none of that is a call Codex must make."""
    upstreams.anthropic.script(anth.Reply(text="The docs say hello.", server_blocks=[
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "gateway docs"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
            {"type": "web_search_result", "url": "https://example.com/docs", "title": "Docs",
             "encrypted_content": "enc-page-1", "page_age": None}]},
    ]))
    run = codex("anthropic", "Search the gateway docs.")
    assert run.returncode == 0, _failure(run, upstreams.anthropic.requests)
    assert "The docs say hello." in run.stdout, run
    assert len(upstreams.anthropic.requests) == 1, _failure(run, upstreams.anthropic.requests)
