"""The `POST /v1/responses` request body, validated at the edge with pydantic.

Every error names the offending parameter the way OpenAI does (`input[0].content`), so the
SDK's `BadRequestError.param` points the caller at the right field. Types are strict: a string
where a number belongs is an error, not a silent conversion.

What the gateway acts on is validated; what it does not know is accepted, as OpenAI's API and its
clients evolve faster than any gateway: a parameter it has no field for, a tool or an input item
of a type it has never seen, are kept verbatim and passed on to Responses-native upstreams
(`passthrough`, `OpaqueItem`, `HostedTool`). Values of known parameters that are wrong still get
the documented 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.json_body import MAX_DEPTH, parse_json_object, too_deeply_nested

# Upper bound for token counts and similar limits. Token counts end up in Postgres `integer`
# columns (conversations_app.models), so nothing larger can ever be reported back, and no model
# comes within orders of magnitude of it; a larger value is a client bug, better a 400 naming
# the parameter than forwarded upstream after the request was admitted.
INT32_MAX = 2**31 - 1

# Client-sent item ids are stored as given (clients paginate input_items by them), in
# conversations_app.models.Item.item_id, a varchar(100): a longer id would fail the write
# after the upstream was paid for.
ITEM_ID_MAX_LENGTH = 100
ItemId = Annotated[str | None, Field(max_length=ITEM_ID_MAX_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# --- input content parts -------------------------------------------------------------------

class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class OutputText(_Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)


class Refusal(_Strict):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"

    @field_validator("image_url")
    @classmethod
    def _url_or_data(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "data:")):
            raise ValueError("must be an http(s) URL or a data: URL")
        return value


class InputFile(_Strict):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


def _tag(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")]
    | Annotated[OutputText, Tag("output_text")]
    | Annotated[Refusal, Tag("refusal")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[InputFile, Tag("input_file")],
    Discriminator(_tag, custom_error_type="invalid_content_part",
                  custom_error_message="Invalid content part type"),
]


# --- input items ---------------------------------------------------------------------------

class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: ItemId = None
    status: str | None = None


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: ItemId = None
    status: str | None = None
    namespace: str | None = Field(default=None, min_length=1, max_length=128)  # a `namespace` tool's call

    @field_validator("arguments")
    @classmethod
    def _arguments_depth(cls, value: str) -> str:
        # Anthropic and Gemini take the arguments as an object, so their adapters parse this
        # string: nesting that Python's json cannot take must be a 400 here, not a 500 there.
        if too_deeply_nested(value):
            raise ValueError(f"JSON may be nested at most {MAX_DEPTH} levels deep")
        return value


class _ToolOutputItem(_Strict):
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: ItemId = None
    status: str | None = None


class FunctionCallOutputItem(_ToolOutputItem):
    type: Literal["function_call_output"]


class ReasoningItem(_Strict):
    type: Literal["reasoning"]
    id: ItemId = None
    summary: list[Any] = Field(default_factory=list)
    encrypted_content: str | None = None


class CustomToolCallItem(_Strict):
    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: str
    id: ItemId = None


class CustomToolCallOutputItem(_ToolOutputItem):
    type: Literal["custom_tool_call_output"]


class OpaqueItem(_Strict):
    """An input item of a type the gateway does not translate (compaction, web_search_call,
    local_shell_call_output, item_reference, ...): kept verbatim, replayed to Responses-native
    upstreams, left out by translating ones (docs/providers.md)."""

    # At most the width of conversations_app.models.Item.type, varchar(40): a longer type failed the
    # write after the upstream was paid for (a 503). OpenAI's item types are far shorter (`local_shell_call_output`).
    type: str = Field(min_length=1, max_length=40)
    id: ItemId = None


class CompactionItem(OpaqueItem):
    """A `compaction` item: sealed by the gateway (it opens it and gives the upstream the summary), or
    an upstream's own (kept opaque for that upstream); see responses_app.compaction."""

    type: Literal["compaction"]
    encrypted_content: str = Field(min_length=1)
    created_by: str | None = None


_KNOWN_ITEMS = {"message", "function_call", "function_call_output", "reasoning", "custom_tool_call",
                "custom_tool_call_output", "compaction"}


def _item_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type") or ("message" if "role" in value else None)
        if kind is None:
            return None
        # A `type` that is not a string falls to OpaqueItem, whose validation names it.
        return kind if isinstance(kind, str) and kind in _KNOWN_ITEMS else "opaque"
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[CustomToolCallItem, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")]
    | Annotated[CompactionItem, Tag("compaction")]
    | Annotated[OpaqueItem, Tag("opaque")],
    Discriminator(_item_tag, custom_error_type="invalid_item",
                  custom_error_message="Invalid input item: expected an object with a `type` "
                                       "(or a message with a `role`)"),
]
_INPUT_ITEMS = TypeAdapter(list[InputItem])

# --- tools and text format -----------------------------------------------------------------

class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CustomTool(_Strict):
    """A tool whose input is free text (optionally constrained by a grammar in `format`)."""

    type: Literal["custom"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    format: dict[str, Any] | None = None


class NamespaceTool(_Strict):
    """Function and custom tools grouped under a name the model calls them by (Codex's sub-agents)."""

    type: Literal["namespace"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    tools: list[Annotated[Annotated[FunctionTool, Tag("function")] | Annotated[CustomTool, Tag("custom")],
                          Discriminator(_tag)]]


class HostedTool(_Strict):
    """A tool the upstream runs itself (web_search, file_search, code_interpreter, mcp, ...), or
    any type the gateway has never seen: kept verbatim for Responses-native upstreams; translating
    providers map it or follow their `unsupported_tools` policy."""

    type: str = Field(min_length=1, max_length=64)


def _tool_tag(value: Any) -> str | None:
    kind = _tag(value)
    if kind is None:
        return None
    return kind if isinstance(kind, str) and kind in ("function", "custom", "namespace") else "hosted"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[CustomTool, Tag("custom")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[HostedTool, Tag("hosted")],
    Discriminator(_tool_tag, custom_error_type="invalid_tool",
                  custom_error_message="Invalid tool: expected an object with a `type`"),
]


class ToolChoiceNamed(_Strict):
    """`{"type": "function"|"custom", "name": ...}`: that tool must be called."""

    type: Literal["function", "custom"]
    name: str = Field(min_length=1)


class ToolChoiceOther(_Strict):
    """`allowed_tools`, `mcp`, a hosted tool type: passed on as sent."""

    type: str = Field(min_length=1, max_length=64)


def _tool_choice_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "mode"
    kind = _tag(value)
    if kind is None:
        return None
    return "named" if isinstance(kind, str) and kind in ("function", "custom") else "other"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[ToolChoiceNamed, Tag("named")]
    | Annotated[ToolChoiceOther, Tag("other")],
    Discriminator(_tool_choice_tag),
]


class TextFormatText(_Closed):
    type: Literal["text"]


class TextFormatJsonObject(_Closed):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


def _format_tag(value: Any) -> str | None:
    # Prefixed so that the tag ("text") is not mistaken for the `text` parameter in error locations.
    kind = _tag(value)
    return f"format:{kind}" if kind else None


TextFormat = Annotated[
    Annotated[TextFormatText, Tag("format:text")]
    | Annotated[TextFormatJsonObject, Tag("format:json_object")]
    | Annotated[TextFormatJsonSchema, Tag("format:json_schema")],
    Discriminator(_format_tag),
]


class TextParam(_Strict):
    format: TextFormat = Field(default_factory=lambda: TextFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


# --- the request ---------------------------------------------------------------------------

class CreateResponseRequest(_Strict):
    # Parameters the gateway has no field for are accepted (`passthrough`): clients send what the
    # current API has (Codex: `client_metadata`), and the API grows faster than any gateway.
    model_config = ConfigDict(strict=True, extra="allow")

    model: str = Field(min_length=1)
    input: Any
    instructions: str | None = None
    # An empty id would silently start a new chain (the service treats it as "no previous").
    previous_response_id: str | None = Field(default=None, min_length=1)
    conversation: str | dict[str, Any] | None = None
    store: bool = True
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=16, le=INT32_MAX)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool | None = None
    text: TextParam = Field(default_factory=TextParam)
    metadata: dict[str, str] | None = None
    user: str | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    background: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1, le=INT32_MAX)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Documented, not acted on by the gateway: type-checked, echoed back, and passed on to
    # Responses-native upstreams.
    prompt: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    # Validated by parse_create_request (CONTEXT_MANAGEMENT) and echoed back as sent.
    context_management: list[Any] | None = None
    moderation: Any = None
    background_options: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    image: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("metadata may have at most 16 keys")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("metadata keys are limited to 64 characters and values to 512")
        return value

    # Filled by parse_create_request: the items after validation, and the parameters a
    # Responses-native upstream gets as the client sent them (everything the gateway does not own).
    input_items: list[Any] = Field(default_factory=list, exclude=True)
    passthrough: dict[str, Any] = Field(default_factory=dict, exclude=True)
    # Tools and tool_choice exactly as sent, for upstreams (the echo is the normalised form).
    raw_tools: list[dict[str, Any]] = Field(default_factory=list, exclude=True)
    raw_tool_choice: Any = Field(default="auto", exclude=True)
    # `context_management`'s compaction entry: the token count at which the gateway compacts first.
    compact_threshold: int | None = Field(default=None, exclude=True)
    # `conversation`'s id (it may be sent as the id or as {"id": ...}).
    conversation_id: str | None = Field(default=None, exclude=True)
    # Set by the Chat Completions and Messages surfaces (`set_surface_options`), never from a body:
    # the Responses API has neither. Stop sequences, and Messages' own thinking budget in tokens.
    _stop: list[str] | None = PrivateAttr(default=None)
    _reasoning_budget: int | None = PrivateAttr(default=None)

    def set_surface_options(self, *, stop: list[str] | None = None, reasoning_budget: int | None = None) -> None:
        self._stop = stop
        self._reasoning_budget = reasoning_budget

    @property
    def stop_sequences(self) -> list[str] | None:
        return self._stop

    @property
    def reasoning_budget(self) -> int | None:
        return self._reasoning_budget

    @property
    def unknown_parameters(self) -> list[str]:
        """Parameters the gateway has no field for (kept for Responses-native upstreams)."""
        return sorted(self.model_extra or {})


class ContextManagementEntry(_Strict):
    """`context_management: [{"type": "compaction", "compact_threshold": N}]`, the one type OpenAI has."""

    type: Literal["compaction"]
    compact_threshold: int | None = Field(default=None, ge=1000, le=INT32_MAX)


CONTEXT_MANAGEMENT = TypeAdapter(Annotated[list[ContextManagementEntry], Field(min_length=1)])
# What a compaction entry without `compact_threshold` means to the gateway: OpenAI picks one per model;
# the gateway does not know models' context windows, so it takes one that suits today's large ones.
DEFAULT_COMPACT_THRESHOLD = 200_000


# Parameters the gateway acts on itself or translates for every upstream; all the others are passed
# on verbatim to Responses-native upstreams (providers.openai_responses).
GATEWAY_OWNED = frozenset({
    "model", "input", "instructions", "previous_response_id", "conversation", "store", "stream", "background",
    "metadata", "temperature", "top_p", "max_output_tokens", "tools", "tool_choice", "parallel_tool_calls",
    "text", "user", "background_options",
})


def _param_path(loc: tuple[Any, ...], data: Any, *, missing: bool) -> list[str | int]:
    """The steps of a pydantic error location that are steps in the request body itself.

    Locations also name union branches (`str`, `dict[str,any]`, `ToolChoiceFunction`) and
    discriminator tags (`message`, `input_text`); following the location through the body keeps
    only what the caller sent, whatever those are called. (A list of names to skip cannot tell
    the `reasoning` parameter from the `reasoning` item tag inside `input`.) A missing field's
    name, the location's last step, is kept although the body lacks it.
    """
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_body = (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)) or (
            isinstance(node, dict) and isinstance(part, str) and part in node)
        if in_body:
            node = node[part]
        elif not (missing and i == len(loc) - 1):
            continue
        path.append(part)
    return path


def _param(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError, data: dict[str, Any], prefix: tuple[Any, ...] = ()) -> ApiError:
    # With unions, pydantic reports every branch; the deepest location is the most specific.
    errors = [(error, _param_path(prefix + tuple(error["loc"]), data, missing=error["type"] == "missing"))
              for error in exc.errors(include_url=False)]
    error, path = max(errors, key=lambda pair: len(pair[1]))
    param = _param(path)
    if error["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param=param,
                               code="missing_required_parameter")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return invalid_request(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
    return invalid_request(f"Invalid value for '{param}': {message}.", param=param,
                           code="invalid_type" if error["type"].endswith("_type") else "invalid_value")


def parse_create_request(body: bytes) -> CreateResponseRequest:
    # Refuses, before anything is spent, what Postgres or a JSON encoder further on cannot hold.
    return create_request_from(parse_json_object(body))


def _conversation_id(value: str | dict[str, Any]) -> str:
    """`conversation`: the id, or `{"id": ...}` (the SDK sends either)."""
    conversation_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(conversation_id, str) or not conversation_id:
        raise invalid_request("Invalid value for 'conversation': expected a conversation id or {\"id\": ...}.",
                              param="conversation", code="invalid_value")
    return conversation_id


def create_request_from(data: dict[str, Any]) -> CreateResponseRequest:
    """The create request a JSON object (already checked by `parse_json_object`) asks for."""
    if "input" not in data or data["input"] is None:
        raise invalid_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    try:
        request = CreateResponseRequest.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, data) from None
    request.passthrough = {k: v for k, v in data.items() if k not in GATEWAY_OWNED}
    request.raw_tools = data.get("tools") or []
    request.raw_tool_choice = data.get("tool_choice") or "auto"
    if isinstance(request.input, str):
        request.input_items = [MessageItem(role="user", content=request.input)]
    elif isinstance(request.input, list):
        if not request.input:
            raise invalid_request("Invalid value for 'input': it must not be empty.", param="input", code="empty_array")
        try:
            request.input_items = _INPUT_ITEMS.validate_python(request.input)
        except ValidationError as exc:
            raise _first_error(exc, data, prefix=("input",)) from None
    else:
        raise invalid_request("Invalid type for 'input': expected a string or an array of input items.",
                              param="input", code="invalid_type")
    if request.context_management is not None:
        try:
            entries = CONTEXT_MANAGEMENT.validate_python(request.context_management)
        except ValidationError as exc:
            raise _first_error(exc, data, prefix=("context_management",)) from None
        request.compact_threshold = entries[0].compact_threshold or DEFAULT_COMPACT_THRESHOLD
    if request.previous_response_id is not None and request.conversation is not None:
        raise invalid_request("Cannot use 'previous_response_id' together with 'conversation'.",
                              param="previous_response_id", code="mutually_exclusive_parameters")
    if request.conversation is not None:
        request.conversation_id = _conversation_id(request.conversation)
        if not request.store:
            # The turn's items are stored with the conversation, which needs the turn stored.
            raise invalid_request("A response in a conversation is stored with it: 'store: false' cannot be used "
                                  "with 'conversation'.", param="store", code="invalid_value")
    if request.background and not request.store:
        # A background response is only reachable through storage (polling, replay, cancel).
        raise invalid_request("Background responses must be stored: 'background: true' needs 'store: true'.",
                              param="background", code="invalid_value")
    return request
