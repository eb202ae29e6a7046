"""Tools and tool calls for upstreams that only know functions (Chat Completions, Anthropic, Gemini).

Clients send function tools, custom tools (free-text input), namespaces grouping either (Codex's
sub-agent tools), and hosted tools the upstream runs itself (web_search, file_search, mcp, ...).
A translating upstream is shown:

- a function tool as itself;
- a custom tool as a function taking one string, `input`;
- a namespace's tools flattened, each named `<namespace>__<name>` (function names must be plain
  identifiers upstream);
- a hosted tool as the provider's own equivalent where it has one (the provider module decides),
  otherwise nothing, or the request is refused: the provider entry's `unsupported_tools` policy
  (`drop`, the default, or `error`). Dropped tools are named in the response's
  `X-Gateway-Dropped-Tools` header and in the log.

Calls come back the other way: the model calls `crm__lookup` and the client gets a `function_call`
named `lookup` in namespace `crm`; it calls a custom tool's function and the client gets a
`custom_tool_call` carrying the `input` string. Replayed history is rendered the same way: a
`custom_tool_call` as a call of its function, its output as that call's result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from responses_app.providers.base import ProviderError, ProviderRequest, ToolCallDelta

logger = logging.getLogger(__name__)

SEPARATOR = "__"
CUSTOM_INPUT = "input"
CUSTOM_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's input, as free text."}},
    "required": [CUSTOM_INPUT],
    "additionalProperties": False,
}
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Origin:
    """What a function the upstream sees really is, for the client."""

    kind: Literal["function", "custom"]
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # as the upstream sees it
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None


@dataclass
class Toolset:
    functions: list[FunctionSpec] = field(default_factory=list)
    hosted: list[dict[str, Any]] = field(default_factory=list)
    origins: dict[str, Origin] = field(default_factory=dict)

    @classmethod
    def of(cls, tools: list[dict[str, Any]]) -> Toolset:
        toolset = cls()
        for tool in tools:
            kind = tool.get("type")
            if kind in ("function", "custom"):
                toolset._add(tool, None)
            elif kind == "namespace":
                for inner in tool.get("tools") or []:
                    toolset._add(inner, tool["name"])
            else:
                toolset.hosted.append(tool)
        return toolset

    def _add(self, tool: dict[str, Any], namespace: str | None) -> None:
        custom = tool.get("type") == "custom"
        name = upstream_name(tool["name"], namespace)
        description = tool.get("description")
        if custom and tool.get("format"):
            # The grammar a custom tool's input must follow cannot be enforced by a JSON schema; say it.
            description = f"{description or ''}\nInput format: {json.dumps(tool['format'])}".strip()
        parameters = CUSTOM_PARAMETERS if custom else (tool.get("parameters") or _EMPTY_PARAMETERS)
        self.functions.append(FunctionSpec(name, description, parameters, None if custom else tool.get("strict")))
        self.origins[name] = Origin("custom" if custom else "function", tool["name"], namespace)

    def origin(self, name: str | None) -> Origin:
        """The tool behind a function name the upstream called (an unknown name is a plain function)."""
        return self.origins.get(name or "", Origin("function", name or ""))

    def named_choice(self, tool_choice: Any) -> str | None:
        """The upstream name of the tool a `{"type": "function"|"custom", "name"}` choice forces."""
        if isinstance(tool_choice, dict) and tool_choice.get("type") in ("function", "custom"):
            return upstream_name(tool_choice["name"], tool_choice.get("namespace"))
        return None


def tool_call(toolset: Toolset, index: int, call_id: str | None, name: str | None, arguments: str) -> ToolCallDelta:
    """A fragment of a tool call the upstream made, named as the client declared the tool. Only
    the first fragment of a call carries the name; later ones are plain argument fragments."""
    if not name:
        return ToolCallDelta(index, call_id, None, arguments)
    origin = toolset.origin(name)
    return ToolCallDelta(index, call_id, origin.name, arguments, namespace=origin.namespace, kind=origin.kind)


def upstream_name(name: str, namespace: str | None) -> str:
    return f"{namespace}{SEPARATOR}{name}" if namespace else name


def history_call(item: dict[str, Any]) -> tuple[str, str]:
    """(upstream function name, arguments JSON) of a replayed function_call or custom_tool_call."""
    if item["type"] == "custom_tool_call":
        return upstream_name(item["name"], item.get("namespace")), json.dumps({CUSTOM_INPUT: item.get("input", "")})
    return upstream_name(item["name"], item.get("namespace")), item["arguments"]


def live_web_search(tool: dict[str, Any]) -> bool:
    """A web search tool that Anthropic's or Gemini's own (live, billed per use) search can stand
    for. `external_web_access: false` asks for cached results only (Codex's default), which neither
    offers: that tool is left to the `unsupported_tools` policy rather than turned into live search."""
    return tool.get("type") in ("web_search", "web_search_preview") and tool.get("external_web_access") is not False


def unsupported(request: ProviderRequest, provider: str, policy: str, tools: list[dict[str, Any]]) -> None:
    """Apply an entry's `unsupported_tools` policy to hosted tools it has no equivalent for."""
    if not tools:
        return
    kinds = sorted({str(tool.get("type")) for tool in tools})
    if policy == "error":
        raise ProviderError("bad_request", f"Provider {provider!r} cannot run the tool type(s) {', '.join(kinds)}; "
                            "remove them, or use a model on a provider that supports them.")
    for kind in kinds:
        if kind not in request.dropped_tools:
            request.dropped_tools.append(kind)
    logger.info("provider %r has no equivalent for tool type(s) %s: left out", provider, ", ".join(kinds))
