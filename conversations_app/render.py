"""The Conversations API's objects, exactly as the openai SDK types them (`Conversation`,
`ConversationItem`, `ConversationItemList`, `ConversationDeletedResource`) and the spec file's
schemas require.

Items are stored in the canonical shape of responses_app.items, which is an input item's shape.
A conversation item is an item "returned via API", which requires a little more: every message,
function call and function call output has a `status`, an `output_text` part has `annotations` and
`logprobs`, an image part its `detail`, a reasoning item its `summary`, and a tool's output (a
`function_call_output`'s or a `custom_tool_call_output`'s) lists only input parts (`input_text`,
`input_image`, `input_file`), where the gateway also accepts `output_text` and `refusal` parts
(their text is given as `input_text`). Items of the types the gateway keeps verbatim come back as
they were sent.
"""

from __future__ import annotations

from typing import Any

from conversations_app.api_store import ApiConversation


def conversation(row: ApiConversation) -> dict[str, Any]:
    return {"id": row.id, "object": "conversation", "created_at": int(row.created_at.timestamp()),
            "metadata": row.metadata}


def deleted(conversation_id: str) -> dict[str, Any]:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def item_list(items: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    """A page of items. An empty page has no first or last id: null, as for `input_items` (the
    SDK's pager reads `last_id` as optional)."""
    data = [item(stored) for stored in items]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def item(stored: dict[str, Any]) -> dict[str, Any]:
    """One stored item as a `ConversationItem`."""
    kind = stored.get("type")
    if kind == "message":
        return {**stored, "status": stored.get("status") or "completed",
                "content": [_content_part(part) for part in stored.get("content") or []]}
    if kind == "function_call":
        return {**stored, "status": stored.get("status") or "completed"}
    if kind == "function_call_output":
        return {**stored, "status": stored.get("status") or "completed", "output": _tool_output(stored.get("output"))}
    if kind == "custom_tool_call_output":
        return {**stored, "output": _tool_output(stored.get("output"))}
    if kind == "reasoning":
        return {**stored, "summary": stored.get("summary") or []}
    return stored


def _content_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "output_text":
        return {**part, "annotations": part.get("annotations") or [], "logprobs": part.get("logprobs") or []}
    if part.get("type") == "input_image":
        return {**part, "detail": part.get("detail") or "auto"}
    return part


def _tool_output(output: Any) -> Any:
    if not isinstance(output, list):
        return output if output is not None else ""
    parts = []
    for part in output:
        if part.get("type") == "output_text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif part.get("type") == "refusal":
            parts.append({"type": "input_text", "text": part.get("refusal", "")})
        else:
            parts.append(_content_part(part))
    return parts
