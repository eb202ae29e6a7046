"""The Conversations API's request bodies, validated at the edge: the openai SDK's
`ConversationCreateParams` (`items`, `metadata`), `ConversationUpdateParams` (`metadata`) and
`ItemCreateParams` (`items`).

Items are the input items of POST /v1/responses, validated by its own schema and stored in its
canonical shape (responses_app.items), so an item added here and an item of a turn are one thing.
Limits and errors are OpenAI's: at most 20 items a request, metadata of at most 16 string pairs
with keys of at most 64 characters and values of at most 512; each error names the parameter
(`items[3].content`, `metadata.topic`). Everything is checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from gateway_project.api_errors import invalid_request
from gateway_project.json_body import parse_json_object
from responses_app.items import UnknownReference, canonical_items
from responses_app.schema import _INPUT_ITEMS, _first_error

# OpenAI's limits (the spec file's `maxItems: 20`; the SDK's `Metadata` documentation).
MAX_ITEMS = 20
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def parse_create(body: bytes) -> tuple[dict[str, str], list[Any]]:
    """POST /v1/conversations: the metadata and the (parsed) initial items; both may be left out
    or null, and so may the body itself (the SDK sends none for `conversations.create()`)."""
    data = parse_json_object(body) if body.strip() else {}
    _only(data, "items", "metadata")
    items = [] if data.get("items") is None else _items(data, allow_empty=True)
    return _metadata(data.get("metadata")), items


def parse_update(body: bytes) -> dict[str, str]:
    """POST /v1/conversations/{id}: the new metadata, replacing the old (null clears it)."""
    data = parse_json_object(body)
    _only(data, "metadata")
    if "metadata" not in data:
        raise invalid_request("Missing required parameter: 'metadata'.", param="metadata",
                              code="missing_required_parameter")
    return _metadata(data["metadata"])


def parse_items(body: bytes) -> list[Any]:
    """POST /v1/conversations/{id}/items: the (parsed) items to append, 1 to 20."""
    data = parse_json_object(body)
    _only(data, "items")
    if data.get("items") is None:
        raise invalid_request("Missing required parameter: 'items'.", param="items",
                              code="missing_required_parameter")
    return _items(data, allow_empty=False)


def references(items: list[Any]) -> list[str]:
    """The ids the `item_reference`s among the items name (to be looked up in the conversation)."""
    return [item.id for item in items if item.type == "item_reference" and item.id]


def canonical(items: list[Any], earlier: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items as stored; an `item_reference` is replaced by the item it names, from `earlier`
    (the conversation's items it names) or from earlier in the same request."""
    try:
        return canonical_items(items, earlier)
    except UnknownReference as unknown:
        raise invalid_request(f"Item with id '{unknown.item_id}' not found.", param=f"items[{unknown.index}]",
                              code="item_not_found") from None


def _only(data: dict[str, Any], *allowed: str) -> None:
    """No upstream takes what the gateway does not know here, so an unknown parameter is refused."""
    for name in data:
        if name not in allowed:
            raise invalid_request(f"Unknown parameter: '{name}'.", param=name or None, code="unknown_parameter")


def _items(data: dict[str, Any], *, allow_empty: bool) -> list[Any]:
    raw = data["items"]
    if not isinstance(raw, list):
        raise invalid_request(f"Invalid type for 'items': expected an array of items, but got {_kind(raw)} instead.",
                              param="items", code="invalid_type")
    if len(raw) > MAX_ITEMS:
        raise invalid_request(f"Invalid 'items': array too long. Expected an array with maximum length {MAX_ITEMS}, "
                              f"but got an array with length {len(raw)} instead.", param="items",
                              code="array_above_max_length")
    if not raw and not allow_empty:
        raise invalid_request("Invalid 'items': empty array. Expected an array with minimum length 1, but got an "
                              "empty array instead.", param="items", code="empty_array")
    try:
        return list(_INPUT_ITEMS.validate_python(raw))
    except ValidationError as exc:
        raise _first_error(exc, data, prefix=("items",)) from None


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid type for 'metadata': expected an object, but got {_kind(value)} instead.",
                              param="metadata", code="invalid_type")
    if len(value) > MAX_METADATA_PAIRS:
        raise invalid_request(f"Invalid 'metadata': too many properties. Expected an object with at most "
                              f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties "
                              "instead.", param="metadata", code="object_above_max_properties")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid_request(f"Invalid 'metadata': key too long. Expected a key with maximum length "
                                  f"{MAX_METADATA_KEY}, but got a key with length {len(key)} instead.",
                                  param="metadata", code="string_above_max_length")
        if not isinstance(item, str):
            raise invalid_request(f"Invalid type for 'metadata.{key}': expected a string, but got {_kind(item)} "
                                  "instead.", param=f"metadata.{key}", code="invalid_type")
        if len(item) > MAX_METADATA_VALUE:
            raise invalid_request(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                                  f"length {MAX_METADATA_VALUE}, but got a string with length {len(item)} instead.",
                                  param=f"metadata.{key}", code="string_above_max_length")
    return dict(value)


def _kind(value: Any) -> str:
    """How OpenAI's errors name a JSON value's type: 'a string', 'an object', ..."""
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), "null")
