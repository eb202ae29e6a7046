"""Canonical items: the one shape in which input and output items are stored, replayed and sent
to providers.

Every item has an `id`, unique within its response (clients paginate `input_items` by it: a repeated
id would send their paging back to where it was, for ever, so a repeat gets an id of its own).
Message content is always a list of parts, with `input_*` parts for user/system/developer and
`output_text` or `refusal` parts for the assistant, whatever shorthand the client used. Items of
the types the gateway does not translate are kept exactly as sent (with an id when they had none).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from responses_app.ids import new_id
from responses_app.schema import (
    CustomToolCallItem,
    CustomToolCallOutputItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    OpaqueItem,
    ReasoningItem,
)


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
        call = {"id": item.id or new_id("fc"), "type": "function_call", "call_id": item.call_id,
                "name": item.name, "arguments": item.arguments, "status": "completed"}
        if item.namespace:
            call["namespace"] = item.namespace  # which tool it calls: `lookup` in `crm`, not a `lookup`
        return call
    if isinstance(item, FunctionCallOutputItem):
        return {"id": item.id or new_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                "output": _tool_output(item.output), "status": "completed"}
    if isinstance(item, ReasoningItem):
        data = item.model_dump(exclude_none=True)
        data["id"] = item.id or new_id("rs")
        return data
    if isinstance(item, CustomToolCallItem):
        return {"id": item.id or new_id("ctc"), "type": "custom_tool_call", "call_id": item.call_id,
                "name": item.name, "input": item.input, "status": "completed"}
    if isinstance(item, CustomToolCallOutputItem):
        return {"id": item.id or new_id("ctco"), "type": "custom_tool_call_output", "call_id": item.call_id,
                "output": _tool_output(item.output)}
    if isinstance(item, OpaqueItem):
        data = item.model_dump(exclude_none=True)
        data.setdefault("id", new_id("item"))
        return data
    raise TypeError(f"not an input item: {item!r}")


class UnknownReference(LookupError):
    """An `item_reference` to an item that is neither in the chain nor earlier in the request."""

    def __init__(self, index: int, item_id: str) -> None:
        super().__init__(item_id)
        self.index, self.item_id = index, item_id


def canonical_items(items: list[Any], earlier: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The request's items as stored. An `item_reference` is replaced by the item it names, from the
    chain (`earlier`) or from this request: upstreams are called with `store: false` and could not
    look it up, and input_items shows what the model saw."""
    known = {item["id"]: item for item in earlier}
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        data = canonical_item(item)
        if data["type"] == "item_reference":
            target = known.get(data["id"])
            if target is None:
                raise UnknownReference(index, data["id"])
            data = copy.deepcopy(target)
        known.setdefault(data["id"], data)
        out.append(data)
    seen: set[str] = set()
    for data in out:
        if data["id"] in seen:
            data["id"] = new_id(data["id"].partition("_")[0] or "item")
        seen.add(data["id"])
    return out


def _tool_output(output: Any) -> Any:
    """A tool's output as stored: its text, or its content parts."""
    return output if isinstance(output, str) else [part.model_dump(exclude_none=True) for part in output]
