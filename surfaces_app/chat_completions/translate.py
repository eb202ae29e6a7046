"""A Chat Completions request in Responses terms: the `CreateResponseRequest` the pipeline runs.

    messages      system/developer/user/assistant → message items, in their places; an assistant's
                  `tool_calls` → function_call items; `tool` messages → function_call_output items
    parts         text → input_text (output_text for the assistant), image_url → input_image,
                  file → input_file, an assistant's refusal → a refusal part
    tools         {type: function, function: {...}} → {type: function, name, ...}; tool_choice alike
    formats       response_format → text.format; verbosity → text.verbosity
    limits        max_completion_tokens (or max_tokens) → max_output_tokens
    effort        reasoning_effort → reasoning.effort
    stop          stop (a string or up to 4) → the turn's stop sequences (not a Responses parameter)
    storage       `store` as sent, else `conversations.store_stateless_calls`; never a chain

What a Responses-native upstream takes as it is (service_tier, prompt_cache_key, safety_identifier,
penalties, ...) keeps its name and is passed on by the pipeline like any Responses parameter.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway_project.api_errors import invalid_request
from responses_app.schema import CreateResponseRequest, create_request_from
from surfaces_app.chat_completions.schema import (
    IGNORED,
    AssistantMessage,
    AudioPart,
    ChatRequest,
    FilePart,
    FormatJsonSchema,
    ImagePart,
    NamedToolChoice,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

logger = logging.getLogger(__name__)

# Chat parameters that keep their name and meaning in the Responses API.
_SAME_NAME = ("temperature", "top_p", "user", "metadata", "parallel_tool_calls", "presence_penalty",
              "frequency_penalty", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
              "prompt_cache_options")


def create_request(chat: ChatRequest, *, store_by_default: bool) -> CreateResponseRequest:
    """The turn `chat` asks for; raises the 400s only a translation can find."""
    ignored = [name for name in IGNORED if getattr(chat, name) is not None] + chat.unknown_parameters
    if ignored:
        logger.debug("chat completions: parameters accepted and ignored: %s", ", ".join(ignored))
    data: dict[str, Any] = {"model": chat.model, "input": input_items(chat),
                            "store": store_by_default if chat.store is None else chat.store,
                            "stream": bool(chat.stream)}
    data.update({name: value for name in _SAME_NAME if (value := getattr(chat, name)) is not None})
    if chat.tools:
        data["tools"] = [{"type": "function", **tool.function.model_dump(by_alias=True, exclude_none=True,
                                                                          exclude_unset=True)}
                         for tool in chat.tools]
    if chat.tool_choice is not None:
        data["tool_choice"] = _tool_choice(chat.tool_choice)
    text: dict[str, Any] = {}
    if chat.response_format is not None:
        text["format"] = _text_format(chat.response_format)
    if chat.verbosity is not None:
        text["verbosity"] = chat.verbosity
    if text:
        data["text"] = text
    if chat.reasoning_effort is not None:
        data["reasoning"] = {"effort": chat.reasoning_effort}
    create = create_request_from(data)
    # Set after validation: the Responses API's own minimum (16) is not Chat Completions' (1). A
    # Responses-native upstream may still refuse a smaller value; its 400 reaches the client.
    create.max_output_tokens = chat.max_completion_tokens or chat.max_tokens
    if chat.stop is not None:
        create.set_surface_options(stop=[chat.stop] if isinstance(chat.stop, str) else chat.stop)
    return create


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "name": choice.function.name}
    allowed = choice.allowed_tools
    return {"type": "allowed_tools", "mode": allowed.mode,
            "tools": [{"type": "function", "name": tool.function.name} for tool in allowed.tools]}


def _text_format(fmt: Any) -> dict[str, Any]:
    if isinstance(fmt, FormatJsonSchema):
        return {"type": "json_schema", **fmt.json_schema.model_dump(by_alias=True, exclude_none=True)}
    return {"type": fmt.type}


# --- messages ----------------------------------------------------------------------------------

def input_items(chat: ChatRequest) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for index, message in enumerate(chat.messages):
        if isinstance(message, SystemMessage):
            items.append({"type": "message", "role": message.role, "content": _text_content(message.content)})
        elif isinstance(message, UserMessage):
            items.append({"type": "message", "role": "user", "content": _user_content(message.content, index)})
        elif isinstance(message, AssistantMessage):
            items += _assistant_items(message)
        elif isinstance(message, ToolMessage):
            output = message.content if isinstance(message.content, str) else "".join(p.text for p in message.content)
            items.append({"type": "function_call_output", "call_id": message.tool_call_id, "output": output})
    if not items:  # only empty assistant messages, which say nothing to any upstream
        raise invalid_request("Invalid value for 'messages': no message has any content.", param="messages",
                              code="invalid_value")
    return items


def _text_content(content: str | list[TextPart]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [{"type": "input_text", "text": part.text} for part in content]


def _user_content(content: Any, index: int) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for position, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append({"type": "input_image", "image_url": part.image_url.url, "detail": part.image_url.detail})
        elif isinstance(part, FilePart):
            parts.append({"type": "input_file", **part.file.model_dump(include={"file_id", "file_data", "filename"},
                                                                        exclude_none=True)})
        elif isinstance(part, AudioPart):
            raise invalid_request("Audio input is not supported by this gateway.",
                                  param=f"messages[{index}].content[{position}]", code="unsupported_content")
    return parts


def _assistant_items(message: AssistantMessage) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"type": "output_text", "text": message.content})
    elif message.content:
        for part in message.content:
            if isinstance(part, RefusalPart):
                parts.append({"type": "refusal", "refusal": part.refusal})
            else:
                parts.append({"type": "output_text", "text": part.text})
    if message.refusal:
        parts.append({"type": "refusal", "refusal": message.refusal})
    items: list[dict[str, Any]] = []
    if parts:
        items.append({"type": "message", "role": "assistant", "content": parts})
    for call in message.tool_calls or []:
        items.append({"type": "function_call", "call_id": call.id, "name": call.function.name,
                      "arguments": call.function.arguments})
    return items
