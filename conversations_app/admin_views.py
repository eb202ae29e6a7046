"""What the admin shows of stored conversations: search over message text, filters whose choices
come from the usage rollup, a conversation as a chat, and the usage chart.

Kept apart from conversations_app/admin.py (the ModelAdmins) so that each piece stays small; all of
it only reads, except the admin's delete, which goes through the same store calls as the API.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.postgres.search import SearchQuery, SearchVectorField
from django.db import connections
from django.db.models import F, Func, Q, QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse

from conversations_app.models import Conversation, ConversationItem, Item, StoredResponse, UsageDay

# A conversation page shows at most this many turns (and API conversation entries); past that it
# says how many more there are, so one huge conversation cannot make a page of megabytes.
MAX_TURNS = 300
MAX_RAW_JSON = 100_000
ID_PREFIXES = ("resp_", "conv_", "msg_", "fc_", "ctc_", "rs_", "cmp_", "chatcmpl-")
# The ids Chat Completions and Messages clients are given name the stored response by the same hex
# (surfaces_app: `chatcmpl-<hex>` and `msg_<hex>` are `resp_<hex>`).
SURFACE_ID_PREFIXES = ("chatcmpl-", "msg_")


# --- search ----------------------------------------------------------------------------------


class ItemText(Func):
    """to_tsvector over the item JSON's string values, exactly as the GIN index of migration 0007
    is built, so that Postgres answers a search from the index."""

    template = "to_tsvector('english'::regconfig, %(expressions)s)"
    output_field = SearchVectorField()

    def __init__(self) -> None:
        super().__init__(F("data"))


def matching_items(term: str, using: str = "default") -> QuerySet[Item]:
    """Items whose text matches: Postgres full-text search (words, stemmed: "Paris" finds "Paris."),
    or a plain substring match on other databases (SQLite in development)."""
    if connections[using].vendor == "postgresql":
        query = SearchQuery(term, config="english", search_type="websearch")
        return Item.objects.alias(text=ItemText()).filter(text=query)
    return Item.objects.filter(data__icontains=term)


def looks_like_id(term: str) -> bool:
    return term.startswith(ID_PREFIXES) and " " not in term


def response_ids(term: str) -> list[str]:
    """The stored responses an id may name: itself, and for a Chat Completions or Messages id the
    response it was stored as."""
    for prefix in SURFACE_ID_PREFIXES:
        if term.startswith(prefix):
            return [term, "resp_" + term.removeprefix(prefix)]
    return [term]


def search_responses(queryset: QuerySet[StoredResponse], term: str) -> QuerySet[StoredResponse]:
    term = term.strip()
    if not term:
        return queryset
    if looks_like_id(term):
        return queryset.filter(Q(pk__in=response_ids(term)) | Q(conversation_id=term)
                               | Q(pk__in=Item.objects.filter(item_id=term).values("response_id")))
    return queryset.filter(pk__in=matching_items(term).values("response_id"))


def search_conversations(queryset: QuerySet[Conversation], term: str) -> QuerySet[Conversation]:
    term = term.strip()
    if not term:
        return queryset
    if looks_like_id(term):
        return queryset.filter(Q(pk=term) | Q(pk__in=StoredResponse.objects.filter(pk__in=response_ids(term))
                                              .values("conversation_id")))
    items = matching_items(term)
    return queryset.filter(
        Q(pk__in=items.filter(response__isnull=False).values("response__conversation_id"))
        # Items a client added to an API conversation belong to no response.
        | Q(pk__in=ConversationItem.objects.filter(item__in=items.filter(response__isnull=True))
            .values("conversation_id")))


# --- filters ---------------------------------------------------------------------------------


def rollup_filter(field_name: str, title: str) -> type[admin.SimpleListFilter]:
    """A list filter on `field_name` whose choices are the values the usage rollup has seen: one
    small query on UsageDay instead of a SELECT DISTINCT over the responses."""

    class RollupFilter(admin.SimpleListFilter):
        parameter_name = field_name

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            values = (UsageDay.objects.order_by(field_name).values_list(field_name, flat=True).distinct()[:100])
            return [(value, value or "(none)") for value in values]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.value()
            return queryset if value is None else queryset.filter(**{field_name: value})

    RollupFilter.title = title
    RollupFilter.__name__ = f"{field_name.title()}Filter"
    return RollupFilter


# --- a conversation as a chat ------------------------------------------------------------------


def admin_url(obj: Conversation | StoredResponse) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)])


def short(identifier: str, keep: int = 11) -> str:
    return identifier if len(identifier) <= keep + 1 else identifier[:keep] + "…"


def _part(**shown: str) -> dict[str, str | None]:
    """One shown part: every key the template reads, present (a missing one fails the template)."""
    return {"text": None, "refusal": None, "image": None, "remote_image": None, "label": None, **shown}


def _text_of(content: Any) -> list[dict[str, str | None]]:
    """A message's content (a string or a list of parts) as parts the template shows."""
    if isinstance(content, str):
        return [_part(text=content)]
    parts: list[dict[str, str | None]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = str(part.get("type", ""))
        if isinstance(part.get("text"), str):
            parts.append(_part(text=part["text"]))
        elif isinstance(part.get("refusal"), str):
            parts.append(_part(refusal=part["refusal"]))
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url.startswith("data:image/"):
                parts.append(_part(image=url))
            elif isinstance(url, str):
                # A remote image is linked, not loaded: opening the page fetches nothing elsewhere.
                parts.append(_part(remote_image=url))
            else:
                parts.append(_part(label=f"image {part.get('file_id', '')}"))
        elif kind == "input_file":
            parts.append(_part(label=f"file {part.get('filename') or part.get('file_id') or ''}"))
        else:
            parts.append(_part(label=kind or "part"))
    return parts


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return str(value)


def show_item(item: Item) -> dict[str, Any]:
    data = item.data if isinstance(item.data, dict) else {}
    shown: dict[str, Any] = {"type": item.type, "item_id": item.item_id, "output": item.kind == Item.Kind.OUTPUT}
    if item.type == "message":
        shown.update(kind="message", role=data.get("role", ""), parts=_text_of(data.get("content")))
    elif item.type in ("function_call", "custom_tool_call"):
        shown.update(kind="tool_call", name=data.get("name", ""), call_id=data.get("call_id", ""),
                     arguments=_pretty(data.get("arguments", data.get("input", ""))))
    elif item.type in ("function_call_output", "custom_tool_call_output"):
        output = data.get("output", "")
        shown.update(kind="tool_output", call_id=data.get("call_id", ""),
                     parts=_text_of(output) if isinstance(output, list) else [_part(text=_pretty(output))])
    elif item.type == "reasoning":
        summary = [part.get("text", "") for part in data.get("summary", []) if isinstance(part, dict)]
        shown.update(kind="reasoning", parts=[_part(text=text) for text in summary])
    else:
        shown.update(kind="other", raw=json.dumps(data, ensure_ascii=False)[:2000])
    return shown


@dataclass
class Turn:
    response: StoredResponse | None  # None: items a client added to an API conversation
    items: list[Item] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def shown_items(self) -> list[dict[str, Any]]:
        return [show_item(item) for item in self.items]

    @property
    def latency(self) -> float | None:
        response = self.response
        if response is None or response.completed_at is None:
            return None
        return (response.completed_at - response.created_at).total_seconds()

    @property
    def raw_json(self) -> str:
        body: dict[str, Any] = {"items": [item.data for item in self.items]}
        if self.response is not None:
            body = {"id": self.response.id, "settings": self.response.settings, "error": self.response.error,
                    "incomplete_details": self.response.incomplete_details, **body}
        text = json.dumps(body, indent=2, ensure_ascii=False, default=str)
        return text if len(text) <= MAX_RAW_JSON else text[:MAX_RAW_JSON] + "\n… (cut)"


def _items_by_response(response_ids: list[str]) -> dict[str, list[Item]]:
    grouped: dict[str, list[Item]] = defaultdict(list)
    if response_ids:
        for item in Item.objects.filter(response_id__in=response_ids).order_by("response_id", "kind", "position"):
            grouped[str(item.response_id)].append(item)
    return grouped


def conversation_turns(conversation: Conversation) -> tuple[list[Turn], int]:
    """The conversation's turns in order and how many were left out (over MAX_TURNS): a chain's
    responses by depth, branches side by side; an API conversation's items in their order, grouped
    by the turn that produced them. Three queries at most, whatever the length."""
    responses = list(StoredResponse.objects.filter(conversation=conversation)
                     .order_by("depth", "created_at")[: MAX_TURNS + 1])
    left_out = max(0, len(responses) - MAX_TURNS)
    responses = responses[:MAX_TURNS]
    followups: dict[str, list[str]] = defaultdict(list)
    for response in responses:
        if response.previous_response_id:
            followups[str(response.previous_response_id)].append(response.id)
    by_id = {response.id: response for response in responses}

    def turn_of(response: StoredResponse | None) -> Turn:
        return Turn(response, followups=followups.get(response.id, []) if response else [])

    if conversation.kind != Conversation.Kind.API:
        items = _items_by_response(list(by_id))
        chain = [turn_of(response) for response in responses]
        for turn, response in zip(chain, responses, strict=True):
            turn.items = items.get(response.id, [])
        return chain, left_out

    turns: list[Turn] = []
    placed: set[str] = set()
    entries = (ConversationItem.objects.filter(conversation=conversation).select_related("item")
               .order_by("seq")[: MAX_TURNS * 20])
    for entry in entries:
        response_id = entry.item.response_id
        last = turns[-1].response if turns else None
        if not turns or (last.id if last else None) != response_id:
            turns.append(turn_of(by_id.get(str(response_id)) if response_id else None))
            if response_id:
                placed.add(str(response_id))
        turns[-1].items.append(entry.item)
    # Turns that are not among the conversation's items: failed ones, or ones chained from a turn
    # of the conversation with previous_response_id (stored in it, but not its items).
    rest = [response for response in responses if response.id not in placed]
    rest_items = _items_by_response([response.id for response in rest])
    for response in rest:
        turn = turn_of(response)
        turn.items = rest_items.get(response.id, [])
        turn.note = "not among the conversation's items (failed, or chained with previous_response_id)"
        turns.append(turn)
    return turns, left_out


# --- usage chart -----------------------------------------------------------------------------


def usage_chart(queryset: QuerySet[UsageDay], days: int = 90) -> tuple[str, dict[str, Any]]:
    """An SVG bar chart of tokens (and cost, on the right axis) per day over the filtered rollup
    rows, the last `days` days with usage, and the totals of those rows. Two queries."""
    per_day = list(queryset.order_by().values("day").annotate(
        input=Sum("input_tokens"), output=Sum("output_tokens"), cost=Sum("cost_usd"),
        requests=Sum("requests"), errors=Sum("errors")).order_by("-day")[:days])
    per_day.reverse()
    totals = queryset.order_by().aggregate(
        requests=Sum("requests"), errors=Sum("errors"), input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"), cost_usd=Sum("cost_usd"))
    # Imported here, not with the admin, which every worker loads (with PyJWT, identity_app.oidc,
    # 4 MB of a worker's RSS).
    import pygal

    config = pygal.Config()
    # No script from elsewhere: pygal's tooltips script would be loaded from a CDN.
    config.js = []
    config.disable_xml_declaration = True
    config.width, config.height = 1000, 320
    config.explicit_size = True
    config.x_label_rotation = 30
    config.legend_at_bottom = True
    config.title = "Tokens (left) and cost in USD (right) per day"
    config.value_formatter = lambda value: f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
    config.include_x_axis = True  # both axes from 0, so a day's bars compare by height
    config.max_scale = 6  # few y labels: the chart is drawn at about 740 px beside the filters
    chart = pygal.Bar(config)
    labels: list[date] = [row["day"] for row in per_day]
    chart.x_labels = [day.isoformat() for day in labels]
    chart.add("input tokens", [row["input"] or 0 for row in per_day])
    chart.add("output tokens", [row["output"] or 0 for row in per_day])
    chart.add("cost (USD)", [float(row["cost"] or Decimal(0)) for row in per_day], secondary=True)
    svg = chart.render(is_unicode=True) if per_day else ""
    # pygal adds an inline script with its config for its tooltips script, which is not loaded
    # (that one would come from a CDN): without it the SVG is static and runs nothing.
    return re.sub(r"<script\b.*?</script>", "", svg, flags=re.DOTALL), totals
