"""The provider interface: a request in Responses terms in, a small vocabulary of events out.

A provider translates `ProviderRequest` into its upstream wire format and the upstream's answer
into the events below. It never sees Django, the SSE encoder or the store; the pipeline and the
stream assembler never see a wire format. Errors are raised as `ProviderError`, before the
first event (the gateway can still answer with an HTTP status) or mid-stream. An answer is
complete only when it ends with `Finish`: a stream that stops without one was cut short.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from responses_app.cancellation import CancelToken
from responses_app.providers.scrub import scrub


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of one tool call. `index` identifies the call within this answer;
    `call_id` and `name` arrive on the first fragment, `arguments` are appended."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    # The tool's namespace (a namespace tool's function), and whether the client declared it as a
    # custom tool: its call then reaches the client as a custom_tool_call, whose `input` is the
    # `input` member of the arguments (providers.tooling).
    namespace: str | None = None
    kind: Literal["function", "custom"] = "function"


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cached_tokens + other.cached_tokens, self.cache_write_tokens + other.cache_write_tokens,
                     self.reasoning_tokens + other.reasoning_tokens)

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens, "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal"]


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    # Which of the request's stop sequences ended the answer, when the upstream says (Anthropic does).
    stop_sequence: str | None = None


@dataclass(frozen=True)
class OutputItem:
    """A whole output item passed on as the upstream made it (a Responses-native upstream's
    reasoning item, web_search_call, custom_tool_call, ...): the client gets it verbatim."""

    item: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """Nothing arrived for a while (a reasoning model thinking). Made by the upstream guard, never by
    a provider: the SSE path turns it into a comment so proxies do not cut an idle stream."""


Event = TextDelta | RefusalDelta | ToolCallDelta | OutputItem | Usage | Finish | Heartbeat


class ProviderError(Exception):
    """An upstream failure, classified so the gateway can choose the client's status.

    kind: `timeout` (504), `unavailable` (503), `rate_limited` (429), `bad_request` (400, the
    upstream's message is safe to pass on), `auth` (502, never echo credentials), `upstream` (502).
    """

    STATUS: ClassVar[dict[str, int]] = {"timeout": 504, "unavailable": 503, "rate_limited": 429, "bad_request": 400,
                                        "auth": 502, "upstream": 502}

    def __init__(self, kind: str, message: str, *, upstream_status: int | None = None,
                 retry_after: float | None = None, retryable: bool | None = None) -> None:
        # Scrubbed here, once: the message reaches clients, log lines and spans.
        message = scrub(message)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        """Worth another try on the same upstream: connection failures, 429 and 5xx. A 200 with a
        malformed body, a timeout or a 4xx is not (the same request would fail the same way, or slowly)."""
        if self._retryable is not None:
            return self._retryable
        if self.kind in ("rate_limited", "unavailable"):
            return True
        return self.kind == "upstream" and (self.upstream_status or 0) >= 500

    @property
    def status(self) -> int:
        return self.STATUS.get(self.kind, 502)


@dataclass(frozen=True)
class Compaction:
    """What one compaction pass produced (`Provider.compact`): a summary the gateway asked the model
    for (translating providers: the gateway seals it into its own compaction item), or the output of
    an upstream that compacts itself (Responses-native: user messages and its compaction item, kept
    opaque). `usage` is the pass's own, as the upstream reported it."""

    usage: Usage | None
    summary: str | None = None
    output: list[dict[str, Any]] | None = None


@dataclass
class ProviderRequest:
    """A turn in Responses terms. `items` are canonical input items (see responses_app.items):
    the replayed chain first, then this request's input."""

    model: str
    items: list[dict[str, Any]]
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text_format: dict[str, Any] | None = None
    verbosity: str | None = None
    user: str | None = None
    # Stop sequences (Chat's `stop`, Messages' `stop_sequences`; the Responses API has none).
    stop: list[str] | None = None
    # Messages' `thinking.budget_tokens`, for upstreams that think within a budget (Anthropic); an
    # effort (`passthrough["reasoning"]`) is what every other client sends.
    reasoning_budget: int | None = None
    # The client's parameters the gateway does not own (include, reasoning, client_metadata, ...),
    # as sent: a Responses-native upstream gets them verbatim, translating ones ignore them.
    passthrough: dict[str, Any] = field(default_factory=dict)
    # Hosted tool types a translating provider left out (its `unsupported_tools: drop` policy);
    # one list shared by every attempt's copy of the request, reported to the client in a header.
    dropped_tools: list[str] = field(default_factory=list)
    # Set when the turn must stop (client gone, shutdown); the upstream guard gives each attempt a
    # child token, which also fires on the attempt's own timeouts.
    cancel: CancelToken = field(default_factory=CancelToken)
    # time.monotonic() by which the whole turn must be over, retries and fallbacks included.
    deadline: float | None = None
    # Streams: yield a Heartbeat after this many seconds without an event (None: never).
    heartbeat: float | None = None


class Provider:
    """One configured provider entry. Instances live per worker process (see registry)."""

    type: str = ""

    def __init__(self, key: str, entry: Any) -> None:
        self.key = key
        self.entry = entry

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        """Stream the answer as events. The iterator must be closed by the caller; closing it
        must close the upstream connection."""
        raise NotImplementedError

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        """Answer in one upstream call (non-streaming), expressed as the same events."""
        raise NotImplementedError

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """The input tokens `request` would cost (`POST /v1/responses/input_tokens`). Upstreams
        with a count endpoint ask it; by default the gateway counts the request as Chat
        Completions would receive it, with its own tokenizer (responses_app.tokenizer)."""
        from responses_app import tokenizer
        from responses_app.providers.openai_chat import build_payload

        return tokenizer.count_chat_payload(build_payload(request, stream=False))

    def compact(self, request: ProviderRequest) -> Compaction:
        """Compact the context in `request.items` (`POST /v1/responses/compact`, and `context_management`
        thresholds). By default the gateway asks the model itself, in one non-streamed call, for a
        summary of the context written out as a transcript (responses_app.compaction); upstreams with
        a compact endpoint of their own use it instead."""
        from responses_app import compaction

        summary: list[str] = []
        usage: Usage | None = None
        for event in self.generate(compaction.summary_request(request)):
            if isinstance(event, TextDelta):
                summary.append(event.text)
            elif isinstance(event, Usage):
                usage = event
        text = "".join(summary).strip()
        if not text:
            raise ProviderError("upstream", f"Provider {self.key!r} answered the compaction with no summary.")
        return Compaction(usage=usage, summary=text)

    def close(self) -> None:
        """Release pooled connections."""
