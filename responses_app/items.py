"""Canonical items: the one shape in which input and output items are stored, replayed and sent
to providers.

Every item has an `id` (clients paginate `input_items` by it) and a `status`; message content is
always a list of parts, with `input_*` parts for user/system/developer and `output_text` or
`refusal` parts for the assistant, whatever shorthand the client used.
"""

from __future__ import annotations

from typing import Any

from responses_app.ids import new_id
from responses_app.schema import FunctionCallItem, FunctionCallOutputItem, MessageItem, ReasoningItem


def _part(part: Any, role: str) -> dict[str, Any]:
    data = part.model_dump(exclude_none=True, by_alias=True)
    text_type = part.type in ("input_text", "output_text")
    if role == "assistant" and text_type:
        return {"type": "output_text", "text": part.text, "annotations": data.get("annotations", [])}
    if role != "assistant" and text_type:
        return {"type": "input_text", "text": part.text}
    return data


def canonical_item(item: Any) -> dict[str, Any]:
    if isinstance(item, MessageItem):
        content = item.content if isinstance(item.content, list) else None
        if content is None:
            text_type = "output_text" if item.role == "assistant" else "input_text"
            parts = [{"type": text_type, "text": item.content}]
            if text_type == "output_text":
                parts[0]["annotations"] = []
        else:
            parts = [_part(p, item.role) for p in content]
        return {"id": item.id or new_id("msg"), "type": "message", "role": item.role,
                "status": "completed", "content": parts}
    if isinstance(item, FunctionCallItem):
        return {"id": item.id or new_id("fc"), "type": "function_call", "call_id": item.call_id,
                "name": item.name, "arguments": item.arguments, "status": "completed"}
    if isinstance(item, FunctionCallOutputItem):
        output = item.output if isinstance(item.output, str) else [
            p.model_dump(exclude_none=True) for p in item.output
        ]
        return {"id": item.id or new_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                "output": output, "status": "completed"}
    if isinstance(item, ReasoningItem):
        data = item.model_dump(exclude_none=True)
        data["id"] = item.id or new_id("rs")
        return data
    raise TypeError(f"not an input item: {item!r}")


def canonical_items(items: list[Any]) -> list[dict[str, Any]]:
    return [canonical_item(item) for item in items]
