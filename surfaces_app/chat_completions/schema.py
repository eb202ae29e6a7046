"""The `POST /v1/chat/completions` request body, validated at the edge with pydantic.

Errors name the Chat Completions parameter the client sent (`messages[2].content[0].image_url.url`),
as OpenAI's API does, through the same error shaping as `/v1/responses` (responses_app.schema).
Types are strict. Parameters the gateway does not act on are still type-checked when they are
known (`seed`, `logprobs`, ...) and then ignored; unknown ones are accepted and ignored, as
the API grows faster than any gateway (docs/chat-completions.md has the lists).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from gateway_project.api_errors import invalid_request
from gateway_project.json_body import MAX_DEPTH, parse_json_object, too_deeply_nested
from responses_app import schema as responses_schema
from responses_app.schema import INT32_MAX, _first_error


class _Open(BaseModel):
    # Members the gateway has no use for (a message's legacy `name`, an assistant's `audio`) are accepted.
    model_config = ConfigDict(strict=True, extra="allow")


def _by(key: str) -> Any:
    def tag(value: Any) -> str | None:
        found = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return found if isinstance(found, str) else None
    return tag


# --- content parts -------------------------------------------------------------------------

class TextPart(_Open):
    type: Literal["text"]
    text: str


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


class ImageUrl(_Open):
    url: str
    detail: Literal["auto", "low", "high", "original"] = "auto"

    @field_validator("url")
    @classmethod
    def _url_or_data(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "data:")):
            raise ValueError("must be an http(s) URL or a data: URL")
        return value


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileRef(_Open):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class FilePart(_Open):
    type: Literal["file"]
    file: FileRef


class AudioPart(_Open):
    """Accepted by the schema so that its refusal can say why (the gateway has no audio input)."""

    type: Literal["input_audio"]


_PART_ERROR = {"custom_error_type": "invalid_content_part", "custom_error_message": "Invalid content part type"}

TextParts = list[TextPart]
UserParts = list[Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image_url")] | Annotated[FilePart, Tag("file")]
    | Annotated[AudioPart, Tag("input_audio")],
    Discriminator(_by("type"), **_PART_ERROR),
]]
AssistantParts = list[Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[RefusalPart, Tag("refusal")],
    Discriminator(_by("type"), **_PART_ERROR),
]]


# --- messages ------------------------------------------------------------------------------

class SystemMessage(_Open):
    role: Literal["system", "developer"]
    content: str | TextParts


class UserMessage(_Open):
    role: Literal["user"]
    content: str | UserParts


def _not_too_deep(arguments: str) -> str:
    # Translating upstreams parse the arguments (responses_app.schema.FunctionCallItem says why).
    if too_deeply_nested(arguments):
        raise ValueError(f"JSON may be nested at most {MAX_DEPTH} levels deep")
    return arguments


class FunctionCall(_Open):
    name: str = Field(min_length=1)
    arguments: Annotated[str, AfterValidator(_not_too_deep)]


class ToolCall(_Open):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | AssistantParts | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Open):
    role: Literal["tool"]
    content: str | TextParts
    tool_call_id: str = Field(min_length=1)


Message = Annotated[
    Annotated[SystemMessage, Tag("system")] | Annotated[SystemMessage, Tag("developer")]
    | Annotated[UserMessage, Tag("user")] | Annotated[AssistantMessage, Tag("assistant")]
    | Annotated[ToolMessage, Tag("tool")],
    Discriminator(_by("role"), custom_error_type="invalid_message",
                  custom_error_message="Invalid message: expected a `role` of system, developer, user, "
                                       "assistant or tool"),
]


# --- tools and formats ---------------------------------------------------------------------

class FunctionDefinition(responses_schema.FunctionTool):
    """A function tool's `function`: the Responses API's function tool (name, description,
    parameters, strict), whose `type` Chat gives one level up."""

    type: Literal["function"] = "function"


class FunctionTool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Open):
    name: str = Field(min_length=1)


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(_Open):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice] = Field(min_length=1)


class AllowedToolsChoice(_Open):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[NamedToolChoice, Tag("function")]
    | Annotated[AllowedToolsChoice, Tag("allowed_tools")],
    Discriminator(lambda v: "mode" if isinstance(v, str) else _by("type")(v)),
]


class JsonSchema(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class FormatText(_Open):
    type: Literal["text"]


class FormatJsonObject(_Open):
    type: Literal["json_object"]


class FormatJsonSchema(_Open):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[
    # Prefixed tags, so that `text` is not mistaken for a step of the body in error locations.
    Annotated[FormatText, Tag("format:text")]
    | Annotated[FormatJsonObject, Tag("format:json_object")]
    | Annotated[FormatJsonSchema, Tag("format:json_schema")],
    Discriminator(lambda v: f"format:{_by('type')(v)}"),
]


class StreamOptions(_Open):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # ignored: the gateway adds no obfuscation padding


# --- the request ---------------------------------------------------------------------------

class ChatRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    # Up to 4 stop sequences (an upstream with no such parameter leaves them out: docs/providers.md).
    stop: str | list[str] | None = None
    # Known, type-checked, not acted on (IGNORED).
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, int] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    # Deprecated before tools existed; refused (REFUSED), since ignoring them would answer differently.
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None

    @property
    def unknown_parameters(self) -> list[str]:
        return sorted(self.model_extra or {})


# Chat Completions takes at most this many stop sequences.
MAX_STOP = 4

# Sent with a value, these change nothing in the answer (docs/chat-completions.md says why for each).
IGNORED = ("seed", "logprobs", "top_logprobs", "logit_bias", "prediction", "web_search_options", "moderation")


def parse_chat_request(body: bytes) -> ChatRequest:
    """The request, or the documented 400 naming the parameter."""
    data = parse_json_object(body)
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, data) from None
    _refuse_what_cannot_be_served(request)
    return request


def _refuse_what_cannot_be_served(request: ChatRequest) -> None:
    if request.n is not None and request.n != 1:
        raise invalid_request("Invalid value for 'n': this gateway generates one choice per request; "
                              "send n=1 or leave it out.", param="n", code="invalid_value")
    if request.functions is not None or request.function_call is not None:
        param = "functions" if request.functions is not None else "function_call"
        raise invalid_request(f"'{param}' is deprecated and not supported: use 'tools' and 'tool_choice'.",
                              param=param, code="unsupported_parameter")
    if request.audio is not None or "audio" in (request.modalities or []):
        param = "audio" if request.audio is not None else "modalities"
        raise invalid_request("Audio output is not supported by this gateway.", param=param,
                              code="unsupported_parameter")
    if isinstance(request.stop, list) and not 1 <= len(request.stop) <= MAX_STOP:
        if request.stop:
            raise invalid_request(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, "
                                  f"but got an array with length {len(request.stop)} instead.", param="stop",
                                  code="array_above_max_length")
        raise invalid_request("Invalid 'stop': empty array. Expected an array with minimum length 1, but got an "
                              "empty array instead.", param="stop", code="empty_array")
    if request.stream_options is not None and not request.stream:
        raise invalid_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                              param="stream_options", code="invalid_value")
    for index, message in enumerate(request.messages):
        if isinstance(message, AssistantMessage) and message.content is None and message.refusal is None \
                and not message.tool_calls:
            raise invalid_request(f"Missing required parameter: 'messages[{index}].content' (an assistant message "
                                  "without 'tool_calls' needs it).", param=f"messages[{index}].content",
                                  code="missing_required_parameter")
