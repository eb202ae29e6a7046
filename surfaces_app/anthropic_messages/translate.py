"""A Messages request in Responses terms: the `CreateResponseRequest` the turn pipeline runs.

    system (string or text blocks)      -> instructions
    messages[].content blocks           -> input items, in order:
      text                              -> input_text (user) / output_text (assistant)
      image (base64, url, file)         -> input_image (a data: URL, the URL, the file id)
      document (base64, url, file)      -> input_file; a text or content document -> its text
      tool_use (assistant)              -> function_call (arguments: the input as JSON)
      tool_result (user)                -> function_call_output (text, or text and images)
      thinking with a gateway signature -> the reasoning item it was made from (render.py)
      other thinking, redacted_thinking -> a reasoning item carrying the block (providers.anthropic
                                           `thinking_item`): only an Anthropic upstream reads it
    stop_sequences                      -> the turn's stop sequences (not a Responses parameter)
    max_tokens                          -> max_output_tokens (charged by the rate limiter)
    tools: custom tools                 -> function tools; web_search_* -> the hosted web_search;
           Anthropic's other tool types -> hosted tools of that type (the provider's unsupported_tools)
    tool_choice auto/any/tool/none      -> auto/required/{function, name}/none;
      disable_parallel_tool_use         -> parallel_tool_calls: false
    temperature, top_p                  -> the same; metadata.user_id -> user
    thinking / output_config.effort     -> reasoning {effort, summary: auto}, with encrypted reasoning
                                           asked for (Responses-native upstreams act on it); an
                                           Anthropic upstream gets `thinking.budget_tokens` as sent
                                           (it must be below max_tokens, as Anthropic requires)
    output_config.format (json_schema)  -> text.format json_schema
    top_k, cache_control, service_tier, ...  -> accepted, not acted on (debug log)

Messages is stateless: the turn is stored only with `conversations.store_stateless_calls` on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gateway_project.api_errors import invalid_request
from responses_app.providers.anthropic import thinking_item
from responses_app.schema import CreateResponseRequest, create_request_from
from surfaces_app.anthropic_messages import schema as s

logger = logging.getLogger(__name__)

# A thinking block the gateway made from a reasoning item carries the item in its signature:
# PREFIX + item id + "." + encrypted_content (render.py), so it can be given back to the upstream
# that made it. Signatures without the prefix are some other service's and are left out.
SIGNATURE_PREFIX = "gwrs1."

# Anthropic's web search tool, one type per version (web_search_20250305, ...): the hosted web_search.
WEB_SEARCH_TOOLS = ("web_search_",)

# Parameters of MessageCreateParams the gateway accepts without acting on them.
IGNORED = ("top_k",)


def create_request(request: s.MessagesRequest, *, store: bool) -> CreateResponseRequest:
    """The turn `request` asks for; `store`: whether its transcript is kept (Messages has no
    `store` of its own: the view passes `conversations.store_stateless_calls`)."""
    data = responses_body(request)
    data.update({"stream": request.stream, "store": store})
    if request.temperature is not None:
        data["temperature"] = request.temperature
    if request.top_p is not None:
        data["top_p"] = request.top_p
    if request.metadata is not None and request.metadata.user_id:
        data["user"] = request.metadata.user_id
    ignored = [name for name in IGNORED if getattr(request, name) is not None] + request.unknown_parameters
    if ignored:
        logger.debug("Messages parameters the gateway does not act on, ignored: %s", ", ".join(ignored))
    create = create_request_from(data)
    # Set after validation: Anthropic takes any max_tokens from 1, where the Responses schema has
    # OpenAI's minimum of 16 (a Responses-native upstream may refuse fewer than 16 itself).
    create.max_output_tokens = request.max_tokens
    budget = request.thinking.budget_tokens if isinstance(request.thinking, s.ThinkingEnabled) else None
    if budget is not None and budget >= request.max_tokens:
        raise invalid_request("Invalid value for 'thinking.budget_tokens': `max_tokens` must be greater than "
                              "`thinking.budget_tokens`.",
                              param="thinking.budget_tokens", code="invalid_value")
    create.set_surface_options(stop=request.stop_sequences or None, reasoning_budget=budget)
    return create


def count_request(request: s.CountTokensRequest) -> CreateResponseRequest:
    """What a create request with the same input would send (for its input token count)."""
    if request.unknown_parameters:
        logger.debug("count_tokens parameters the gateway does not act on, ignored: %s",
                     ", ".join(request.unknown_parameters))
    return create_request_from(responses_body(request))


def responses_body(request: s.MessagesRequest | s.CountTokensRequest) -> dict[str, Any]:
    """The input side of a Responses create request body (shared by create and count_tokens)."""
    data: dict[str, Any] = {"model": request.model, "input": input_items(request.messages)}
    if request.system:
        data["instructions"] = request.system if isinstance(request.system, str) else "\n\n".join(
            block.text for block in request.system)
    if request.tools:
        data["tools"] = [tool for tool in (_tool(t) for t in request.tools) if tool is not None]
    if request.tool_choice is not None:
        choice = request.tool_choice
        if isinstance(choice, s.ToolChoiceTool):
            data["tool_choice"] = {"type": "function", "name": choice.name}
        else:
            data["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            data["parallel_tool_calls"] = False
    if (reasoning := _reasoning(request)) is not None:
        data["reasoning"] = reasoning
        # A Responses-native upstream then sends its reasoning items with their encrypted content,
        # which the thinking block's signature carries back (see SIGNATURE_PREFIX).
        data["include"] = ["reasoning.encrypted_content"]
    if request.output_config is not None and request.output_config.format is not None:
        data["text"] = {"format": {"type": "json_schema", "name": "output",
                                   "schema": request.output_config.format.schema_}}
    return data


def _reasoning(request: s.MessagesRequest | s.CountTokensRequest) -> dict[str, Any] | None:
    effort = request.output_config.effort if request.output_config is not None else None
    thinking = request.thinking
    if isinstance(thinking, s.ThinkingOther) and thinking.type == "disabled":
        return None
    if effort is None and thinking is None:
        return None
    if effort is None and isinstance(thinking, s.ThinkingEnabled):
        # A token budget as OpenAI's effort levels: about what each level spends.
        budget = thinking.budget_tokens
        effort = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return {"effort": {"max": "xhigh"}.get(effort or "medium", effort or "medium"), "summary": "auto"}


def _tool(tool: s.CustomTool | s.ServerTool) -> dict[str, Any] | None:
    if isinstance(tool, s.CustomTool):
        out: dict[str, Any] = {"type": "function", "name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            out["description"] = tool.description
        return out
    extra = tool.model_extra or {}
    if tool.type.startswith(WEB_SEARCH_TOOLS):
        search: dict[str, Any] = {"type": "web_search"}
        if extra.get("allowed_domains"):
            search["filters"] = {"allowed_domains": extra["allowed_domains"]}
        location = extra.get("user_location")
        if isinstance(location, dict):
            search["user_location"] = {"type": "approximate", **{
                k: v for k, v in location.items() if k in ("city", "region", "country", "timezone") and v}}
        return search
    # No Responses equivalent: a hosted tool of Anthropic's type, which the serving provider maps or
    # leaves to its `unsupported_tools` policy (drop: named in X-Gateway-Dropped-Tools).
    return {"type": tool.type}


# --- messages ----------------------------------------------------------------------------------

def input_items(messages: list[s.Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for m, message in enumerate(messages):
        blocks: list[Any] = ([s.TextBlock(type="text", text=message.content)] if isinstance(message.content, str)
                             else message.content)
        parts: list[dict[str, Any]] = []  # the message being built, until a block that is an item of its own
        for b, block in enumerate(blocks):
            where = f"messages[{m}].content[{b}]"
            if isinstance(block, (s.ToolUseBlock, s.ToolResultBlock)):
                expected = "assistant" if isinstance(block, s.ToolUseBlock) else "user"
                if message.role != expected:
                    raise invalid_request(f"Invalid value for '{where}': {block.type} blocks belong in "
                                          f"{expected} messages.", param=where, code="invalid_value")
                _flush(items, parts, message.role)
                items.append(_tool_item(block))
            elif isinstance(block, (s.ThinkingBlock, s.RedactedThinkingBlock)):
                _flush(items, parts, message.role)
                if (reasoning := reasoning_item(block)) is not None:
                    items.append(reasoning)
            elif (part := _part(block, message.role)) is not None:
                parts.append(part)
        _flush(items, parts, message.role)
    if all(item["type"] == "reasoning" for item in items):
        raise invalid_request("Invalid value for 'messages': no content the gateway can send (only thinking or "
                              "unsupported blocks).", param="messages", code="invalid_value")
    return items


def _flush(items: list[dict[str, Any]], parts: list[dict[str, Any]], role: str) -> None:
    if parts:
        items.append({"type": "message", "role": role, "content": list(parts)})
        parts.clear()


def _tool_item(block: s.ToolUseBlock | s.ToolResultBlock) -> dict[str, Any]:
    if isinstance(block, s.ToolUseBlock):
        return {"type": "function_call", "call_id": block.id, "name": block.name,
                "arguments": json.dumps(block.input)}
    # `is_error` has no Responses form; the model reads the error from the content itself.
    if isinstance(block.content, str):
        return {"type": "function_call_output", "call_id": block.tool_use_id, "output": block.content}
    parts = [p for p in (_part(c, "user") for c in block.content) if p is not None]
    if all(p["type"] == "input_text" for p in parts):
        output: Any = "".join(p["text"] for p in parts)
    else:
        output = parts
    return {"type": "function_call_output", "call_id": block.tool_use_id, "output": output}


def _part(block: Any, role: str) -> dict[str, Any] | None:
    """A block as a content part of a `role` message; None for blocks with no Responses form."""
    if isinstance(block, s.TextBlock):
        return {"type": "output_text" if role == "assistant" else "input_text", "text": block.text}
    if role == "assistant":
        logger.debug("assistant %s block left out: it has no Responses form", block.type)
        return None
    if isinstance(block, s.ImageBlock):
        source = block.source
        if isinstance(source, s.Base64Source):
            return {"type": "input_image", "image_url": f"data:{source.media_type};base64,{source.data}"}
        if isinstance(source, s.UrlSource):
            return {"type": "input_image", "image_url": source.url}
        return {"type": "input_image", "file_id": source.file_id}
    if isinstance(block, s.DocumentBlock):
        return _document(block)
    logger.debug("user %s block left out: it has no Responses form", block.type)
    return None


def _document(block: s.DocumentBlock) -> dict[str, Any]:
    source = block.source
    filename = block.title or "document"
    if isinstance(source, s.Base64Source):
        return {"type": "input_file", "filename": filename,
                "file_data": f"data:{source.media_type};base64,{source.data}"}
    if isinstance(source, s.UrlSource):
        return {"type": "input_file", "file_url": source.url}
    if isinstance(source, s.FileSource):
        return {"type": "input_file", "file_id": source.file_id}
    if isinstance(source, s.TextSource):
        text = source.data
    else:  # content: its text blocks (images inside a document have no Responses form)
        content = source.content
        text = content if isinstance(content, str) else "\n".join(
            c.text for c in content if isinstance(c, s.TextBlock))
    return {"type": "input_text", "text": f"{block.title}\n\n{text}" if block.title else text}


def reasoning_item(block: s.ThinkingBlock | s.RedactedThinkingBlock) -> dict[str, Any] | None:
    """The reasoning item a gateway-made thinking block came from (None if its signature is
    damaged); for any other block (Claude's own), a reasoning item that carries it, which only an
    Anthropic upstream reads back."""
    if isinstance(block, s.RedactedThinkingBlock) or not block.signature.startswith(SIGNATURE_PREFIX):
        return thinking_item(block.model_dump())
    item_id, _, encrypted = block.signature.removeprefix(SIGNATURE_PREFIX).partition(".")
    if not item_id or not encrypted:
        return None
    summary = [{"type": "summary_text", "text": block.thinking}] if block.thinking else []
    return {"type": "reasoning", "id": item_id, "summary": summary, "encrypted_content": encrypted}


def signature(item: dict[str, Any]) -> str:
    """The signature of the thinking block made from reasoning `item` (see SIGNATURE_PREFIX)."""
    encrypted = item.get("encrypted_content")
    if not isinstance(encrypted, str) or not encrypted or not item.get("id"):
        return ""
    return f"{SIGNATURE_PREFIX}{item['id']}.{encrypted}"
