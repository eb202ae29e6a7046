"""The `POST /v1/messages` request body (Anthropic's MessageCreateParams), validated at the edge.

Errors name the parameter as sent (`messages[0].content[1].source`), through the same location
walk as the Responses API's schema. What the gateway translates is validated strictly; content
blocks and parameters it does not act on are accepted (Anthropic's API grows too) and left out,
each named in a debug log line (surfaces_app.anthropic_messages.translate).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from gateway_project.json_body import parse_json_object
from responses_app.schema import INT32_MAX, _first_error


class _Strict(BaseModel):
    # Extra members (`cache_control`, `citations`, ...) are accepted and not acted on.
    model_config = ConfigDict(strict=True, extra="allow")


def _tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


# --- sources -----------------------------------------------------------------------------------

class Base64Source(_Strict):
    type: Literal["base64"]
    # A MIME type: it goes into a data: URL, which a `;` or `,` in it would break.
    media_type: str = Field(pattern=r"^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$", max_length=100)
    data: str


class UrlSource(_Strict):
    type: Literal["url"]
    url: str = Field(pattern=r"^https?://")


class FileSource(_Strict):
    type: Literal["file"]
    file_id: str = Field(min_length=1)


class TextSource(_Strict):
    type: Literal["text"]
    data: str
    media_type: str = "text/plain"


ImageSource = Annotated[
    Annotated[Base64Source, Tag("base64")] | Annotated[UrlSource, Tag("url")] | Annotated[FileSource, Tag("file")],
    Discriminator(_tag, custom_error_type="invalid_source",
                  custom_error_message="Invalid source: expected a `type` of base64, url or file"),
]


# --- content blocks ----------------------------------------------------------------------------

class TextBlock(_Strict):
    type: Literal["text"]
    text: str


class ImageBlock(_Strict):
    type: Literal["image"]
    source: ImageSource


class ContentSource(_Strict):
    """A document made of content blocks (text and images)."""

    type: Literal["content"]
    content: str | list[Annotated[Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")],
                                  Discriminator(_tag)]]


class DocumentBlock(_Strict):
    type: Literal["document"]
    source: Annotated[
        Annotated[Base64Source, Tag("base64")] | Annotated[UrlSource, Tag("url")]
        | Annotated[FileSource, Tag("file")] | Annotated[TextSource, Tag("text")]
        | Annotated[ContentSource, Tag("content")],
        Discriminator(_tag, custom_error_type="invalid_source",
                      custom_error_message="Invalid source: expected a `type` of base64, url, file, text or content"),
    ]
    title: str | None = None


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


ResultContent = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")],
    Discriminator(_tag, custom_error_type="invalid_content_block",
                  custom_error_message="Invalid tool_result content block: expected text, image or document"),
]


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ResultContent] = ""
    is_error: bool | None = None


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(_Strict):
    """A block the gateway has no Responses form for (server_tool_use, web_search_tool_result,
    search_result, container_upload, ...): accepted and left out."""

    type: str = Field(min_length=1, max_length=64)


_BLOCKS = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}


def _block_tag(value: Any) -> str | None:
    kind = _tag(value)
    if kind is None:
        return None
    return kind if kind in _BLOCKS else "other"


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")] | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")] | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")] | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_tag, custom_error_type="invalid_content_block",
                  custom_error_message="Invalid content block: expected an object with a `type`"),
]


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


# --- tools -------------------------------------------------------------------------------------

class CustomTool(_Strict):
    """A client tool: the model calls it, the client runs it (`tool_use` ... `tool_result`)."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ServerTool(_Strict):
    """One of Anthropic's own tool types (`web_search_20250305`, `bash_20250124`, ...)."""

    type: str = Field(min_length=1, max_length=64)
    name: str | None = None


def _tool_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return "custom" if value.get("type") in (None, "custom") else "server"


Tool = Annotated[
    Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("server")],
    Discriminator(_tool_tag, custom_error_type="invalid_tool", custom_error_message="Invalid tool: expected an object"),
]


class ToolChoiceMode(_Strict):
    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool | None = None


ToolChoice = Annotated[
    Annotated[ToolChoiceMode, Tag("mode")] | Annotated[ToolChoiceTool, Tag("tool")],
    Discriminator(lambda v: "tool" if _tag(v) == "tool" else "mode"),
]


# --- settings ----------------------------------------------------------------------------------

class Metadata(_Strict):
    user_id: str | None = Field(default=None, max_length=256)


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024, le=INT32_MAX)


class ThinkingOther(_Strict):
    type: Literal["disabled", "adaptive"]


Thinking = Annotated[
    Annotated[ThinkingEnabled, Tag("enabled")] | Annotated[ThinkingOther, Tag("other")],
    Discriminator(lambda v: "enabled" if _tag(v) == "enabled" else "other"),
]


class OutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class MessagesRequest(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1, le=INT32_MAX)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    # Anthropic's ranges: temperature 0-1 (OpenAI's go to 2).
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    stream: bool = False

    @property
    def unknown_parameters(self) -> list[str]:
        return sorted(self.model_extra or {})


class CountTokensRequest(_Strict):
    """`POST /v1/messages/count_tokens`: the input side of a create request."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None

    @property
    def unknown_parameters(self) -> list[str]:
        return sorted(self.model_extra or {})


M = TypeVar("M", MessagesRequest, CountTokensRequest)


def parse_body(model: type[M], body: bytes) -> M:
    """`body` as a create (`MessagesRequest`) or count (`CountTokensRequest`) request; the 400
    names the first wrong parameter."""
    # Refuses, before anything is spent, what Postgres or a JSON encoder further on cannot hold.
    data = parse_json_object(body)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, data) from None
