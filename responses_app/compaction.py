"""Compaction on every provider: `POST /v1/responses/compact` and `context_management` thresholds.

A Responses-native upstream (`openai` with `api: responses`) compacts itself: its compact endpoint,
or `context_management` passed on, and its `compaction` items are opaque to the gateway.

For every other provider the gateway compacts with the model itself: the context is written out as
a transcript (`transcript`) and the model is asked, with `SUMMARY_PROMPT`, for a summary
(`Provider.compact`, one non-streamed call through the route's retries, fallbacks and breakers).
The summary is sealed for the caller's tenant (gateway_project.sealing) into the
`encrypted_content` of a `compaction` item. As OpenAI documents, a compacted context is all the
user messages, followed by that one item.

When a context holds the gateway's items (`open_context`), the last one stands for everything
before it but the user messages: those are kept, the other items before it are dropped, and the
item itself becomes a user message that says it is the summary (`SUMMARY_HEADER`). That is what
the upstream gets, whatever its type, on create and compact alike, and whether the item came back
as input or from the stored chain, so a chain compacted by a threshold continues from the summary.
An item that does not open (altered, sealed for another tenant or under a key no longer listed,
malformed) is a 400 `invalid_encrypted_content`; an upstream's own item given to a model that is not
served by a Responses-native upstream is a 400 too: nobody else can read it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from gateway_project.api_errors import ApiError, invalid_request
from gateway_project.sealing import Unsealable, is_sealed, seal, unseal
from responses_app import tokenizer
from responses_app.ids import new_id
from responses_app.providers.base import Event, OutputItem, Provider, ProviderError, ProviderRequest, Usage
from responses_app.providers.registry import Route
from responses_app.providers.resilience import ResilientProvider
from responses_app.providers.translate import output_text

SUMMARY_PROMPT = """\
You are compacting a conversation between a user and an AI assistant so that the assistant can \
continue it with a much smaller context. The user's own messages will be kept word for word; \
everything else the transcript holds (the assistant's answers, its tool calls and their results, \
earlier summaries) will be replaced by what you write now.

Write a summary from which the assistant can carry on as if it still had the whole transcript:
- the user's goals, and every instruction, preference and constraint still in force;
- decisions made, and why;
- the state of the work: facts, names, identifiers, paths, numbers, code and tool results that \
later steps need, quoted exactly where exactness matters;
- what was tried and did not work;
- open questions, and what the assistant was about to do next or still has to answer.

Be concise but leave out nothing the next step needs. Add nothing that is not in the transcript. \
Answer with the summary only."""

TRANSCRIPT_INTRO = "Here is the transcript to summarise.\n\n"

SUMMARY_HEADER = ("[Summary of the earlier conversation] The earlier part of this conversation was compacted. "
                  "The user's messages from it are kept above; everything else in it is summarised here.\n\n")


# --- which upstream compacts ---------------------------------------------------------------

def compacts_itself(provider: Provider) -> bool:
    """A Responses-native upstream: it has a compact endpoint, takes `context_management`, and
    reads its own compaction items."""
    entry = provider.entry
    return getattr(entry, "type", None) == "openai" and getattr(entry, "api", None) == "responses"


def native(route: Route) -> bool:
    """Whether the model's first servable provider entry compacts itself (fallbacks follow it)."""
    return compacts_itself(route.provider.candidates[0].provider)


# --- the gateway's items -------------------------------------------------------------------

def sealed_item(summary: str, owner: str) -> dict[str, Any]:
    return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": seal({"summary": summary}, owner)}


def summary_message(item_id: str, summary: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": SUMMARY_HEADER + summary}]}


def is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def _refused(index: int, first_input: int, message: str, code: str) -> ApiError:
    if index >= first_input:
        return invalid_request(message, param=f"input[{index - first_input}]", code=code)
    return invalid_request(f"{message} It is in the chain of 'previous_response_id'.", param="previous_response_id",
                           code=code)


def _summary_of(item: dict[str, Any], owner: str, index: int, first_input: int) -> str:
    try:
        summary = unseal(item.get("encrypted_content") or "", owner).get("summary")
    except Unsealable as why:
        raise _refused(index, first_input, f"The compaction item's encrypted_content cannot be opened: {why}.",
                       "invalid_encrypted_content") from None
    if not isinstance(summary, str):
        raise _refused(index, first_input, "The compaction item's encrypted_content is malformed.",
                       "invalid_encrypted_content")
    return summary


def open_context(items: list[dict[str, Any]], *, owner: str, first_input: int, native: bool) -> list[dict[str, Any]]:
    """The items an upstream is given for `items` (the chain, then the request's input from index
    `first_input`): the gateway's compaction items opened (see the module doc); an upstream's own
    kept for a Responses-native upstream and refused for any other."""
    sealed = [i for i, item in enumerate(items) if item.get("type") == "compaction"
              and is_sealed(item.get("encrypted_content"))]
    # Every one must open, the ones the last makes redundant too: a tampered item is refused wherever it is.
    summaries = {i: _summary_of(items[i], owner, i, first_input) for i in sealed}
    last = sealed[-1] if sealed else -1
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if index == last:
            out.append(summary_message(item["id"], summaries[index]))
        elif index < last:
            if is_user_message(item):
                out.append(item)
        elif item.get("type") == "compaction" and not native:
            raise _refused(index, first_input, "This compaction item was made by an upstream's own compaction "
                           "(it is not sealed by this gateway), and only that kind of upstream can read it; the "
                           "model of this request is not served by one. Compact again with this model.",
                           "invalid_encrypted_content")
        else:
            out.append(item)
    return out


def compacted(items: list[dict[str, Any]], summary: str, owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A context compacted by the gateway: its new compaction item, and what the upstream is given
    from now on (its user messages, then the summary)."""
    item = sealed_item(summary, owner)
    context = open_context([*items, item], owner=owner, first_input=len(items) + 1, native=True)
    return item, context


# --- the summarisation pass ----------------------------------------------------------------

def _part_text(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return str(part.get("text") or "")
    if kind == "refusal":
        return f"(refused) {part.get('refusal') or ''}"
    if kind == "input_image":
        return "[an image]"
    if kind == "input_file":
        return f"[a file{': ' + str(part['filename']) if part.get('filename') else ''}]"
    return ""


def _entry(item: dict[str, Any]) -> str | None:
    kind = item.get("type")
    if kind == "message":
        content = item.get("content")
        parts = [content] if isinstance(content, str) else [_part_text(p) for p in content or []]
        return f"[{item.get('role')}]\n" + "\n".join(p for p in parts if p)
    if kind in ("function_call", "custom_tool_call"):
        name = f"{item['namespace']}.{item.get('name')}" if item.get("namespace") else item.get("name")
        given = item.get("arguments") if kind == "function_call" else item.get("input")
        return f"[assistant called the tool {name} (call {item.get('call_id')})]\n{given}"
    if kind in ("function_call_output", "custom_tool_call_output"):
        return f"[result of tool call {item.get('call_id')}]\n{output_text(item.get('output') or '')}"
    if kind == "reasoning":
        summary = " ".join(str(p.get("text") or "") for p in item.get("summary") or [] if isinstance(p, dict))
        return f"[assistant reasoning]\n{summary}" if summary.strip() else None
    if kind == "compaction":
        return None  # an upstream's opaque item: nothing the model could read
    shown = {k: v for k, v in item.items() if k not in ("id", "type", "status")}
    return f"[{kind}]\n{json.dumps(shown, ensure_ascii=False)}"


def transcript(instructions: str | None, items: list[dict[str, Any]]) -> str:
    entries = [f"[instructions the assistant was given]\n{instructions}"] if instructions else []
    entries += [entry for entry in (_entry(item) for item in items) if entry is not None]
    return "\n\n".join(entries)


def summary_request(request: ProviderRequest) -> ProviderRequest:
    """What the model is asked for a summary of `request`'s context: the transcript as one user
    message under `SUMMARY_PROMPT`, with no tools (so every upstream takes it, tool calls and all)."""
    text = TRANSCRIPT_INTRO + transcript(request.instructions, request.items)
    return replace(request, items=[{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                  "text": text}]}],
                   instructions=SUMMARY_PROMPT, tools=[], tool_choice=None, parallel_tool_calls=None,
                   text_format=None, verbosity=None, passthrough={}, heartbeat=None, stop=None,
                   reasoning_budget=None)


# --- thresholds (`context_management`) -----------------------------------------------------

def estimate_tokens(context: list[dict[str, Any]], instructions: str | None, tools: list[dict[str, Any]]) -> int:
    """The context's input tokens, counted by the gateway's own tokenizer as a Chat Completions
    payload (responses_app.tokenizer): the same count for every provider, made without a call."""
    from responses_app.providers.openai_chat import build_payload

    try:
        count = tokenizer.count_chat_payload(build_payload(ProviderRequest(model="", items=context,
                                                                           instructions=instructions), stream=False))
    except ProviderError:  # a part Chat has no form for: count the transcript instead
        count = tokenizer.count_texts([transcript(instructions, context)])
    return count + (tokenizer.count_texts([json.dumps(tools)]) if tools else 0)


class CompactFirst(ResilientProvider):
    """The route of a turn whose context passed its `compact_threshold` (a provider the gateway
    compacts for): the same candidates, but an answer starts with a compaction pass, its
    compaction item is the first output item, and the answer is made on the compacted context.
    The turn's usage is the pass's and the answer's together."""

    def __init__(self, route: ResilientProvider, items: list[dict[str, Any]], owner: str) -> None:
        super().__init__(route.candidates)
        self._items = items
        self._owner = owner

    def _compacted(self, request: ProviderRequest) -> tuple[dict[str, Any], ProviderRequest, Usage | None]:
        result = self.compact(request)
        if result.summary is None:  # a Responses-native fallback compacted: its output, as it made it
            output = result.output or []
            item = next((i for i in reversed(output) if i.get("type") == "compaction"), None)
            if item is None:
                raise ProviderError("upstream", f"Provider {self.key!r} compacted without a compaction item.")
            return item, replace(request, items=output), result.usage
        item, context = compacted(self._items, result.summary, self._owner)
        return item, replace(request, items=context), result.usage

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        item, request, usage = self._compacted(request)
        return iter([OutputItem(item), *_plus(super().generate(request), usage)])

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        item, request, usage = self._compacted(request)
        yield OutputItem(item)
        events = super().stream(request)
        try:
            yield from _plus(events, usage)
        finally:
            events.close()  # type: ignore[attr-defined]


def _plus(events: Iterator[Event], usage: Usage | None) -> Iterator[Event]:
    """The answer's events, its usage with the compaction pass's added (upstreams report usage
    as running totals, so each report gets it)."""
    for event in events:
        yield event + usage if isinstance(event, Usage) and usage is not None else event
