"""manage.py chat against the gateway under gunicorn with a fake upstream, fed on stdin: streamed
answers, turns chained with previous_response_id, /model switches, /new starts over, a conversation
of the Conversations API with --conversation, an API key from the environment."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn import ROOT, GatewayProcess
from tests.e2e.test_conversation_turns import upstream  # noqa: F401 - fixture: a fake answering 'noted'
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = [pytest.mark.e2e]


def _config(fake: FakeOpenAI, *, auth: bool = False) -> str:
    return f"""
logging: {{format: text, level: warn}}
auth: {{enabled: {str(auth).lower()}}}
providers:
  openai: {{type: openai, api_key: k, endpoint: "{fake.url}/v1", retry: {{max_retries: 0}}}}
models:
  - {{name: first-model, provider: openai, provider_model_id: upstream-one}}
  - {{name: other-model, provider: openai, provider_model_id: upstream-two}}
"""


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI) -> Iterator[GatewayProcess]:  # noqa: F811 - the imported fixture
    with GatewayProcess(_config(upstream), workers=2) as gw:
        yield gw


def _chat(gw: GatewayProcess, stdin: str, *args: str, env: dict[str, str] | None = None,
          module: bool = False) -> subprocess.CompletedProcess[str]:
    command = ["-m", "gateway_project.chat_client"] if module else ["manage.py", "chat"]
    return subprocess.run([sys.executable, *command, "--url", gw.url, *args], cwd=ROOT,
                          env={**gw.env(), **(env or {})}, input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def _messages(body: bytes) -> list[tuple[str, str]]:
    out = []
    for message in json.loads(body)["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
        out.append((message["role"], text))
    return out


def test_a_chat_chains_turns_switches_models_and_starts_over(gateway: GatewayProcess, upstream: FakeOpenAI):  # noqa: F811 - the imported fixture
    upstream.reset()
    done = _chat(gateway, "My name is Ada.\nWhat is my name?\n/model other-model\nAnd now?\n/new\nFresh start\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["noted"] * 4
    assert "model first-model" in done.stderr  # the first model the gateway lists
    assert "[model: other-model]" in done.stderr and "[new chat]" in done.stderr
    bodies = [json.loads(r.body) for r in upstream.requests]
    assert [b["model"] for b in bodies] == ["upstream-one", "upstream-one", "upstream-two", "upstream-two"]
    assert all(b["stream"] for b in bodies)
    assert _messages(upstream.requests[1].body) == [("user", "My name is Ada."), ("assistant", "noted"),
                                                    ("user", "What is my name?")]
    assert len(_messages(upstream.requests[2].body)) == 5  # the whole chain, on the other model
    assert _messages(upstream.requests[3].body) == [("user", "Fresh start")]


def test_a_conversation_of_the_conversations_api(gateway: GatewayProcess, upstream: FakeOpenAI):  # noqa: F811 - the imported fixture
    upstream.reset()
    done = _chat(gateway, "One\nTwo\n/id\n/new\nThree\n/quit\nnever sent\n", "--conversation", "new",
                 "--model", "other-model", "--no-stream")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["noted"] * 3
    first = done.stderr.split("conversation ", 1)[1].split(";")[0]
    second = done.stderr.split("[new conversation: ", 1)[1].split("]")[0]
    assert first.startswith("conv_") and second.startswith("conv_") and first != second
    items = requests.get(f"{gateway.base_url}/conversations/{first}/items", params={"order": "asc"}, timeout=10).json()
    assert [item["role"] for item in items["data"]] == ["user", "assistant", "user", "assistant"]
    assert len(upstream.requests) == 3 and len(_messages(upstream.requests[1].body)) == 3
    assert _messages(upstream.requests[2].body) == [("user", "Three")]


def test_errors_are_shown_and_the_chat_goes_on(gateway: GatewayProcess, upstream: FakeOpenAI):  # noqa: F811 - the imported fixture
    upstream.reset()
    done = _chat(gateway, "/model ghost\nHello\n/model first-model\n/models\nHello again\n", module=True)
    assert done.returncode == 0, done.stderr
    assert "error: 400: The model 'ghost' does not exist" in done.stderr
    assert "first-model\nother-model" in done.stderr
    assert done.stdout.splitlines() == ["noted"]


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(gateway: GatewayProcess, upstream: FakeOpenAI):  # noqa: F811 - the imported fixture
    upstream.reset()
    upstream.script(Reply(text="one two three four five six seven eight nine ten", chunk_delay=0.5))
    chat = subprocess.Popen([sys.executable, "manage.py", "chat", "--url", gateway.url], cwd=ROOT, env=gateway.env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write("Tell me a long story\n")
    chat.stdin.flush()
    assert chat.stdout.read(3) == "one"  # the answer has begun
    chat.send_signal(signal.SIGINT)
    assert upstream.requests[0].client_disconnected.wait(5)  # the gateway hung up on the upstream too
    out, err = chat.communicate("And now?\n", timeout=30)
    assert chat.returncode == 0, err
    assert "[interrupted]" in err
    assert out.splitlines()[-1] == "noted" and "ten" not in out
    assert len(upstream.requests) == 2


def test_an_api_key_from_the_environment(upstream: FakeOpenAI):  # noqa: F811 - the imported fixture
    with GatewayProcess(_config(upstream, auth=True), workers=1) as gw:
        created = subprocess.run([sys.executable, "manage.py", "create_api_key", "--name", "chat", "--owner", "ops"],
                                 cwd=ROOT, env=gw.env(), capture_output=True, text=True, timeout=60, check=True)
        key = next(word for word in created.stdout.split() if word.startswith("gwk_"))
        refused = _chat(gw, "Hi\n", "--model", "first-model")
        assert refused.returncode == 1 and "error: 401" in refused.stderr
        done = _chat(gw, "Hi\n", env={"GATEWAY_API_KEY": key})
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "noted"


