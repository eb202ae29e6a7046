"""What the real-client tests (Codex CLI, Agents SDK, LangChain) share: one fake upstream per wire
format and a gateway config that maps a model name onto each.

    responses-model -> `openai` entry with `api: responses` (the upstream's own Responses API)
    chat-model      -> `openai` entry (Chat Completions)
    claude-model    -> `anthropic` entry (Messages)

Each test module starts the fakes and one gunicorn once (module-scoped fixtures) and resets the
fakes before each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.gunicorn import ROOT
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_responses_upstream import FakeOpenAIResponses
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import FakeServer

# What scripts/test installs (npm `@openai/codex`, pinned there): the CLI and the version it must report.
CODEX = ROOT / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
CODEX_VERSION = "0.171.0"

MODELS = {"responses": "responses-model", "chat": "chat-model", "anthropic": "claude-model"}
UPSTREAM_MODELS = {"responses": "gpt-upstream-responses", "chat": "gpt-upstream-chat",
                   "anthropic": "claude-upstream"}
KINDS = list(MODELS)


@dataclass
class Upstreams:
    responses: FakeOpenAIResponses = field(default_factory=FakeOpenAIResponses)
    chat: FakeOpenAI = field(default_factory=FakeOpenAI)
    anthropic: FakeAnthropic = field(default_factory=FakeAnthropic)

    def of(self, kind: str) -> FakeServer:
        fake: FakeServer = getattr(self, kind)
        return fake

    def all(self) -> list[FakeServer]:
        return [self.responses, self.chat, self.anthropic]

    def reset(self) -> None:
        for fake in self.all():
            fake.reset()

    def close(self) -> None:
        for fake in self.all():
            fake.close()


def config_yaml(upstreams: Upstreams) -> str:
    # No retries: one scripted reply per upstream request, and a failure reaches the client as is.
    quick = "read_timeout: 20, retry: {max_retries: 0}"
    return f"""
logging: {{format: text, level: warn}}
providers:
  openai-responses: {{type: openai, api: responses, api_key: sk-up-responses,
                      endpoint: "{upstreams.responses.url}/v1", {quick}}}
  openai-chat: {{type: openai, api_key: sk-up-chat, endpoint: "{upstreams.chat.url}/v1", {quick}}}
  anthropic: {{type: anthropic, api_key: sk-up-anthropic, endpoint: "{upstreams.anthropic.url}", {quick}}}
models:
  - {{name: {MODELS["responses"]}, provider: openai-responses, provider_model_id: {UPSTREAM_MODELS["responses"]}}}
  - {{name: {MODELS["chat"]}, provider: openai-chat, provider_model_id: {UPSTREAM_MODELS["chat"]}}}
  - {{name: {MODELS["anthropic"]}, provider: anthropic, provider_model_id: {UPSTREAM_MODELS["anthropic"]}}}
"""


def codex_installed() -> str | None:
    """Why the Codex CLI cannot be used (None when it can): scripts/test installs it."""
    if not CODEX.exists():
        return f"{CODEX.relative_to(ROOT)} is missing: scripts/test installs it (npm @openai/codex@{CODEX_VERSION})"
    if shutil.which("node") is None:
        return "node is not on PATH"
    return None


@dataclass
class CodexRun:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"codex exited {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_codex(base_url: str, model: str, prompt: str, home: Path, workdir: Path, *,
              timeout: float = 60, extra_args: list[str] | None = None) -> CodexRun:
    """`codex exec` in its default configuration, apart from the model provider: the gateway.

    A fresh CODEX_HOME per run holds only config.toml, so nothing from a developer's own
    ~/.codex (auth, profiles, MCP servers) takes part. stdin is closed: `codex exec` would
    otherwise wait to read more of the prompt from it.
    """
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "gateway"\n'
        "\n"
        "[model_providers.gateway]\n"
        'name = "Gateway"\n'
        f'base_url = "{base_url}"\n'
        'wire_api = "responses"\n'
        'env_key = "GATEWAY_KEY"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"CODEX_HOME": str(home), "GATEWAY_KEY": "sk-codex-client", "NO_COLOR": "1"})
    done = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", *(extra_args or []), prompt],
                          cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return CodexRun(done.returncode, done.stdout, done.stderr)


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    """Function names of a tool list in any of the three formats (Responses, Chat, Anthropic)."""
    names = []
    for tool in tools:
        if "function" in tool:
            names.append(tool["function"]["name"])
        elif "name" in tool:
            names.append(tool["name"])
    return names
