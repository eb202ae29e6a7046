"""The Conversations API (the openai SDK's `client.conversations`): thin views over the API store.

Every route is the caller's own: another owner's conversation, a deleted one and one that never
existed all answer the same 404. Bodies are validated (conversations_app.schema) before anything
is read or written, and a rejected request writes nothing.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from conversations_app import removal, render, schema
from conversations_app.api_store import api_conversations
from gateway_project.api_errors import ApiError, not_found
from responses_app.views import api_view, list_page, owner_of

# `include` (every route that returns items) is accepted and has nothing to add: every field the
# gateway stores is always returned (a reasoning item's `encrypted_content` too).


@api_view("POST")
def create_conversation(request: HttpRequest) -> HttpResponse:
    metadata, items = schema.parse_create(request.body)
    created = api_conversations.create_conversation(owner_of(request), metadata, schema.canonical(items, ()))
    return JsonResponse(render.conversation(created))


@api_view("GET", "POST", "DELETE")
def conversation_detail(request: HttpRequest, conversation_id: str) -> HttpResponse:
    owner = owner_of(request)
    if request.method == "DELETE":
        if not api_conversations.delete_conversation(conversation_id, owner):
            raise _conversation_not_found(conversation_id)
        # Hidden now; its rows go in batches once the deletion is committed (conversations_app.removal).
        transaction.on_commit(partial(removal.start, conversation_id))
        return JsonResponse(render.deleted(conversation_id))
    if request.method == "POST":
        found = api_conversations.update_conversation(conversation_id, owner, schema.parse_update(request.body))
    else:
        found = api_conversations.get_conversation(conversation_id, owner)
    if found is None:
        raise _conversation_not_found(conversation_id)
    return JsonResponse(render.conversation(found))


@api_view("GET", "POST")
def conversation_items(request: HttpRequest, conversation_id: str) -> HttpResponse:
    owner = owner_of(request)
    if request.method == "POST":
        items = schema.parse_items(request.body)
        # An item_reference names an item of this conversation (or one earlier in the request).
        wanted = schema.references(items)
        earlier = api_conversations.referenced_items(conversation_id, owner, wanted) if wanted else []
        added = None if earlier is None else api_conversations.add_items(
            conversation_id, owner, schema.canonical(items, earlier))
        if added is None:
            raise _conversation_not_found(conversation_id)
        return JsonResponse(render.item_list(added, has_more=False))
    page = list_page(request, partial(api_conversations.list_items, conversation_id, owner), "conversation")
    if page is None:
        raise _conversation_not_found(conversation_id)
    return JsonResponse(render.item_list(page.items, has_more=page.has_more))


@api_view("GET", "DELETE")
def conversation_item(request: HttpRequest, conversation_id: str, item_id: str) -> HttpResponse:
    owner = owner_of(request)
    if request.method == "DELETE":
        outcome = api_conversations.delete_item(conversation_id, owner, item_id)
        # The conversation as it now stands (the SDK's items.delete returns the Conversation).
        found = api_conversations.get_conversation(conversation_id, owner) if outcome else None
        if outcome and found is not None:
            return JsonResponse(render.conversation(found))
    else:
        outcome = api_conversations.get_item(conversation_id, owner, item_id)
        if outcome:
            return JsonResponse(render.item(outcome))
    if outcome is False:
        raise not_found(f"Item with id '{item_id}' not found.")
    raise _conversation_not_found(conversation_id)


def _conversation_not_found(conversation_id: str) -> ApiError:
    return not_found(f"Conversation with id '{conversation_id}' not found.")
