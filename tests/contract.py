"""Validate what the gateway sends against the two references clients rely on.

1. The `openai` SDK's own pydantic types, exactly as `OpenAI(_strict_response_validation=True)`
   validates them (works on any clone).
2. OpenAI's OpenAPI spec (`../shared/spec/openai-openapi.yaml` beside the repo) with jsonschema.
   Where that file is absent, the spec half is skipped with a message saying so; it is never
   copied into the repo.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openai._models import validate_type
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItem
from openai.types.conversations.conversation_item_list import ConversationItemList
from openai.types.responses import (
    Response,
    ResponseCompactionItem,
    ResponseInputMessageItem,
    ResponseItem,
    ResponseStreamEvent,
)
from openai.types.responses.response_item_list import ResponseItemList
from openai.types.responses.responses_server_event import ResponsesServerEvent
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "spec" / "openai-openapi.yaml"
_SPEC_URI = "urn:openai-openapi"

_SDK_TYPES: dict[str, Any] = {
    "Response": Response,
    "ResponseStreamEvent": ResponseStreamEvent,
    "ResponseItemList": ResponseItemList,
    "ResponseItem": ResponseItem,
    # What the WebSocket mode sends: the stream's events with `stream_id`, `error`, steering events.
    "ResponsesServerEvent": ResponsesServerEvent,
    # The items of a CompactedResponse (tests/providers/test_compaction.py).
    "ResponseCompactionItem": ResponseCompactionItem,
    "ResponseInputMessageItem": ResponseInputMessageItem,
    # The Conversations API (conversations_app): client.conversations and client.conversations.items.
    "Conversation": Conversation,
    "ConversationItem": ConversationItem,
    "ConversationItemList": ConversationItemList,
    "ConversationDeletedResource": ConversationDeletedResource,
    # Chat Completions (surfaces_app.chat_completions): a completion and a stream's chunks.
    "ChatCompletion": ChatCompletion,
    "ChatCompletionChunk": ChatCompletionChunk,
}

# Where the spec file's name for a schema is not the SDK's.
_SPEC_NAMES = {"Conversation": "ConversationResource", "ConversationDeletedResource": "DeletedConversationResource",
               "ChatCompletion": "CreateChatCompletionResponse",
               "ChatCompletionChunk": "CreateChatCompletionStreamResponse"}


_loading = threading.Lock()


def _spec() -> dict[str, Any] | None:
    # Loaded once, under a lock: tests validating from many threads at once each loaded the large
    # file (a second apiece) when the first validation happened in all of them together.
    with _loading:
        return _load_spec()


@functools.cache
def _load_spec() -> dict[str, Any] | None:
    if not SPEC_PATH.exists():
        return None
    with SPEC_PATH.open() as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


@functools.cache
def _registry() -> Registry | None:
    spec = _spec()
    if spec is None:
        return None
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


@functools.cache
def _event_schemas() -> dict[str, str]:
    """Stream event `type` -> its own schema name, so a mismatch names the field, not 'anyOf'."""
    schemas = (_spec() or {}).get("components", {}).get("schemas", {})
    union = schemas.get("ResponseStreamEvent", {})
    out = {}
    for option in union.get("anyOf", union.get("oneOf", [])):
        name = option["$ref"].rsplit("/", 1)[-1]
        for event_type in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
            out[event_type] = name
    return out


@functools.cache
def _server_event_schemas() -> dict[str, str]:
    """WebSocket server event `type` -> the pointer of its option in ResponsesServerEvent."""
    schemas = (_spec() or {}).get("components", {}).get("schemas", {})
    out = {}
    for index, option in enumerate(schemas.get("ResponsesServerEvent", {}).get("anyOf", [])):
        refs = [option] if "$ref" in option else [part for part in option.get("allOf", []) if "$ref" in part]
        for ref in refs:
            name = ref["$ref"].rsplit("/", 1)[-1]
            for event_type in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
                out[event_type] = f"ResponsesServerEvent/anyOf/{index}"
    return out


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator | None:
    registry = _registry()
    if registry is None:
        return None
    return Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=registry)


def spec_available() -> bool:
    return _registry() is not None


def validate_against_sdk(schema_name: str, value: dict[str, Any]) -> None:
    validate_type(type_=_SDK_TYPES[schema_name], value=value)


# Event types newer than the spec file: the SDK's types (the other half of `validate`) are the reference.
NEWER_THAN_SPEC = frozenset({"response.compaction.compacting", "response.steer.accepted", "response.steer.pending",
                             "response.steer.failed"})


def validate_against_spec(schema_name: str, value: dict[str, Any]) -> None:
    if schema_name in ("ResponseStreamEvent", "ResponsesServerEvent") and value.get("type") in NEWER_THAN_SPEC:
        return
    if schema_name == "ResponseStreamEvent" and _spec() is not None:
        specific = _event_schemas().get(value.get("type", ""))
        assert specific, f"event type {value.get('type')!r} is not a ResponseStreamEvent in the spec"
        schema_name = specific
    if schema_name == "ResponsesServerEvent" and _spec() is not None:
        specific = _server_event_schemas().get(value.get("type", ""))
        assert specific, f"event type {value.get('type')!r} is not a ResponsesServerEvent in the spec"
        schema_name = specific
    validator = _validator(_SPEC_NAMES.get(schema_name, schema_name))
    if validator is None:
        return
    errors = sorted((e for e in validator.iter_errors(value) if not _known_spec_defect(e)),
                    key=lambda e: len(list(e.absolute_path)))
    if errors:
        best = errors[0]
        raise AssertionError(f"{schema_name} does not match the OpenAPI spec at "
                             f"{'/'.join(map(str, best.absolute_path))}: {best.message[:500]}")


# The spec file types a Response's `usage` and `user` as non-nullable, but OpenAI sends both as
# null (usage while a response is in progress, user when none was given), the SDK types them
# Optional, and clients that validate against the Open Responses schema require the keys. A null
# there is the one deviation from the spec file these tests accept.
_NULLABLE_IN_PRACTICE = {"usage", "user"}


def _known_spec_defect(error: Any) -> bool:
    path = list(error.absolute_path)
    if error.instance is None and error.validator in ("type", "enum") and error.schema.get("nullable") is True:
        # OpenAPI 3.0's `nullable: true`, which the spec file still uses beside 3.1's `type: null` (Chat
        # Completions' chunks: `finish_reason`, `logprobs`, `usage`) and JSON Schema 2020-12 ignores.
        return True
    instance = error.instance
    steered = instance == "steered" or (isinstance(instance, dict) and instance.get("reason") == "steered")
    if steered and "incomplete_details" in path[-2:]:
        # A steered WebSocket response (responses_app.steering): the SDK's ResponseWsIncomplete
        # documents the reason, the spec file's enum predates it.
        return True
    return error.instance is None and bool(path) and path[-1] in _NULLABLE_IN_PRACTICE


def validate(schema_name: str, value: dict[str, Any]) -> None:
    """Both halves; the SDK half always runs."""
    validate_against_sdk(schema_name, value)
    validate_against_spec(schema_name, value)


def require_spec() -> None:
    if not spec_available():
        pytest.skip(f"OpenAPI spec not found at {SPEC_PATH}; spec validation skipped (SDK validation still ran)")
