"""The admin's conversation, response and usage pages: a conversation read as a chat, search over
message text, filters, honest counts, deleting as the API does, and pinned query counts over
100,000 stored responses."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations_app.api_store import api_conversations
from conversations_app.counting import EXACT_LIMIT
from conversations_app.models import Conversation, Item, StoredResponse, UsageDay
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
         "AABJRU5ErkJggg==")
RESPONSES = "/admin/conversations_app/storedresponse/"
CONVERSATIONS = "/admin/conversations_app/conversation/"
USAGE = "/admin/conversations_app/usageday/"


@pytest.fixture
def staff(api: ApiClient) -> Client:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.login(username="admin", password="pw")
    # The content types are cached per process once read (the "History" link needs them): read
    # here, so that each page's pinned count is the same whatever ran before.
    ContentType.objects.get_for_models(Conversation, StoredResponse, UsageDay)
    return client


def change_url(obj: Conversation | StoredResponse) -> str:
    return reverse(f"admin:conversations_app_{obj._meta.model_name}_change", args=[quote(obj.pk)])


def _user(text: str, *extra_parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}, *extra_parts]}


def api_conversation_with_a_tool_call(api: ApiClient) -> str:
    """An API conversation: a question with an image, a tool call and its result, then a turn."""
    created = api.post("/v1/conversations", {"items": [
        _user("What is the weather in Paris today?", {"type": "input_image", "image_url": PIXEL, "detail": "low"}),
        {"type": "function_call", "call_id": "call_w1", "name": "get_weather",
         "arguments": '{"city": "Paris", "unit": "celsius"}'},
        {"type": "function_call_output", "call_id": "call_w1", "output": "18 degrees and sunny"},
    ]}).json()
    turn = api.create(model="gpt-test", conversation=created["id"], input="Summarise it please")
    assert turn.status_code == 200, turn.content
    return str(created["id"])


def test_a_conversation_page_reads_like_a_chat(api, staff, fake_openai, django_assert_num_queries):
    conversation_id = api_conversation_with_a_tool_call(api)
    conversation = Conversation.objects.get(pk=conversation_id)
    # session, user, the conversation, its responses, its entries with their items
    with django_assert_num_queries(5):
        html = staff.get(change_url(conversation)).content.decode()
    assert "What is the weather in Paris today?" in html and "Summarise it please" in html
    assert "Hello from the fake upstream." in html  # the assistant's answer
    assert "tool call <code>get_weather</code>" in html and "&quot;city&quot;: &quot;Paris&quot;" in html
    assert "18 degrees and sunny" in html
    assert f'<img class="gw-thumb" src="{PIXEL}"' in html
    turn = StoredResponse.objects.get(conversation=conversation)
    assert "gpt-test" in html and "completed" in html and f'title="{turn.pk}"' in html
    assert "<summary>raw JSON</summary>" in html and "&quot;settings&quot;" in html
    assert "/static/conversations_app/admin.css" in html


def test_a_chain_shows_every_turn_in_order_with_its_branches(api, staff, fake_openai, django_assert_num_queries):
    first = api.create(model="gpt-test", input="first question", instructions="Be brief").json()
    second = api.create(model="gpt-test", input="second question", previous_response_id=first["id"]).json()
    branch = api.create(model="gpt-test", input="another second question", previous_response_id=first["id"]).json()
    conversation = Conversation.objects.get(responses__pk=first["id"])
    # session, user, the conversation, its responses, their items
    with django_assert_num_queries(5):
        html = staff.get(change_url(conversation)).content.decode()
    assert html.index("first question") < html.index("second question") < html.index("another second question")
    assert "Be brief" in html and "(branches)" in html
    assert f'title="{second["id"]}"' in html and f'title="{branch["id"]}"' in html
    response = StoredResponse.objects.get(pk=second["id"])
    # session, user, the response, its items, its followups
    with django_assert_num_queries(5):
        page = staff.get(change_url(response)).content.decode()
    assert "second question" in page and f"follows <a href=\"{change_url(StoredResponse(pk=first['id']))}\"" in page


def test_search_finds_a_conversation_by_a_word_of_its_messages(api, staff, fake_openai):
    wanted = api_conversation_with_a_tool_call(api)
    chain = api.create(model="gpt-test", input="Tell me about Lisbon").json()
    chain_conversation = StoredResponse.objects.get(pk=chain["id"]).conversation_id
    page = staff.get(CONVERSATIONS, {"q": "Paris"}).content.decode()
    assert f'title="{wanted}"' in page and f'title="{chain_conversation}"' not in page
    assert "1 conversation" in page
    page = staff.get(CONVERSATIONS, {"q": "lisbon"}).content.decode()
    assert f'title="{chain_conversation}"' in page and f'title="{wanted}"' not in page
    # The response list finds the turns whose own items match, and ids exactly.
    page = staff.get(RESPONSES, {"q": "Lisbon"}).content.decode()
    assert f'title="{chain["id"]}"' in page
    page = staff.get(RESPONSES, {"q": chain["id"]}).content.decode()
    assert f'title="{chain["id"]}"' in page and "1 stored response" in page
    assert "0 stored responses" in staff.get(RESPONSES, {"q": "Reykjavik"}).content.decode()


def test_search_finds_a_stored_chat_completion_or_message_by_the_id_its_client_was_given(api, staff):
    chat = api.post("/v1/chat/completions", {"model": "gpt-test", "store": True,
                                             "messages": [{"role": "user", "content": "hi"}]}).json()
    stored = "resp_" + chat["id"].removeprefix("chatcmpl-")
    page = staff.get(RESPONSES, {"q": chat["id"]}).content.decode()
    assert f'title="{stored}"' in page and "1 stored response" in page
    conversation = StoredResponse.objects.get(pk=stored).conversation_id
    assert f'title="{conversation}"' in staff.get(CONVERSATIONS, {"q": chat["id"]}).content.decode()
    # A Messages id has the same hex; msg_ is also the prefix of message items, still found by theirs.
    page = staff.get(RESPONSES, {"q": "msg_" + chat["id"].removeprefix("chatcmpl-")}).content.decode()
    assert f'title="{stored}"' in page


def test_the_search_uses_the_full_text_index(api, staff):
    if connection.vendor != "postgresql":
        pytest.skip("Postgres full-text search")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        from conversations_app.admin_views import matching_items
        sql, params = matching_items("Paris").values("pk").query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "conversations_app_item_text_search" in plan


def test_filters_by_owner_key_model_provider_status_and_date(api, staff, fake_openai):
    kept = api.create(model="gpt-test", input="hi").json()
    failed = api.create(model="demo", input="hi").json()
    StoredResponse.objects.filter(pk=kept["id"]).update(owner="acme", subject="key:7")
    UsageDay.objects.create(day=timezone.localdate(), model="gpt-test", provider="openai", owner="acme",
                            subject="key:7")
    StoredResponse.objects.filter(pk=failed["id"]).update(status="failed")
    for params in ({"owner": "acme"}, {"subject": "key:7"}, {"model": "gpt-test"}, {"provider": "openai"},
                   {"status": "completed"}):
        page = staff.get(RESPONSES, params).content.decode()
        assert f'title="{kept["id"]}"' in page and f'title="{failed["id"]}"' not in page, params
    assert f'title="{failed["id"]}"' in staff.get(RESPONSES, {"status": "failed"}).content.decode()
    # What the date filter's own links send ("Today"): aware midnights.
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    page = staff.get(RESPONSES, {"created_at__gte": str(midnight), "created_at__lt": str(midnight + timedelta(days=1))})
    assert f'title="{kept["id"]}"' in page.content.decode()
    page = staff.get(RESPONSES, {"created_at__gte": str(midnight + timedelta(days=1))})
    assert f'title="{kept["id"]}"' not in page.content.decode()


def test_small_lists_are_counted_exactly_and_offer_no_select_all(api, staff, fake_openai):
    for _ in range(3):
        api.create(model="gpt-test", input="hi")
    page = staff.get(RESPONSES).content.decode()
    assert "3 stored responses" in page and "estimate" not in page
    assert "Select all" not in page and 'name="action"' not in page


def test_deleting_a_response_does_what_the_api_does_and_is_recorded(api, staff, fake_openai):
    first = api.create(model="gpt-test", input="first").json()
    later = api.create(model="gpt-test", input="later", previous_response_id=first["id"]).json()
    response = StoredResponse.objects.get(pk=first["id"])
    page = staff.get(change_url(response)).content.decode()
    assert "Delete (as the API does)" in page
    delete_url = reverse("admin:conversations_app_storedresponse_delete", args=[quote(response.pk)])
    confirm = staff.get(delete_url).content.decode()
    assert "hidden from the API" in confirm and 'type="submit"' in confirm
    assert StoredResponse.objects.get(pk=first["id"]).deleted_at is None  # nothing happens on GET
    assert staff.post(delete_url).status_code == 302
    deleted = StoredResponse.objects.get(pk=first["id"])
    assert deleted.deleted_at is not None and Item.objects.filter(response=deleted).exists()
    assert StoredResponse.objects.filter(pk=later["id"], deleted_at=None).exists()  # no cascade
    assert api.get(f"/v1/responses/{first['id']}").status_code == 404
    entry = LogEntry.objects.get(object_id=first["id"])
    assert entry.action_flag == DELETION and entry.user.username == "admin"
    assert "as the API does" in entry.change_message
    # Deleted once: no second delete.
    assert staff.get(delete_url).status_code == 403


def test_deleting_an_api_conversation_hides_it_and_removes_it_in_batches(
        api, staff, fake_openai, django_capture_on_commit_callbacks):
    conversation_id = api_conversation_with_a_tool_call(api)
    delete_url = reverse("admin:conversations_app_conversation_delete", args=[quote(conversation_id)])
    assert "removed in batches" in staff.get(delete_url).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        assert staff.post(delete_url).status_code == 302
    assert len(callbacks) == 1  # conversations_app.removal.start, as after DELETE /v1/conversations/{id}
    assert Conversation.objects.get(pk=conversation_id).deleted_at is not None
    assert api.get(f"/v1/conversations/{conversation_id}").status_code == 404
    assert LogEntry.objects.filter(object_id=conversation_id, action_flag=DELETION).count() == 1
    list(api_conversations.remove_in_batches(conversation_id))
    assert not Conversation.objects.filter(pk=conversation_id).exists()


def test_there_is_no_bulk_or_cascading_delete(api, staff, fake_openai):
    first = api.create(model="gpt-test", input="first").json()
    api.create(model="gpt-test", input="later", previous_response_id=first["id"])
    posted = staff.post(RESPONSES, {"action": "delete_selected", "_selected_action": [first["id"]], "post": "yes"})
    assert posted.status_code in (200, 302)
    assert StoredResponse.objects.filter(deleted_at=None).count() == 2
    chain = Conversation.objects.get(responses__pk=first["id"])
    # A chain is not something the API deletes: its responses are deleted one by one.
    assert staff.get(reverse("admin:conversations_app_conversation_delete", args=[quote(chain.pk)])).status_code == 403
    assert "Delete (as the API does)" not in staff.get(change_url(chain)).content.decode()


def test_the_usage_page_has_a_chart_totals_and_filters(api, staff, django_assert_num_queries):
    today = timezone.localdate()
    for days_ago in range(5):
        for subject in ("key:1", "key:2"):
            UsageDay.objects.create(day=today - timedelta(days=days_ago), model="gpt-test", provider="openai",
                                    owner="acme", subject=subject, requests=10, errors=1, input_tokens=1000,
                                    output_tokens=500, cost_usd=Decimal("0.25"))
    # session, user, 4 filter choices (model, provider, owner, key), count, page, chart, totals
    with django_assert_num_queries(10):
        page = staff.get(USAGE).content.decode()
    assert "<svg" in page and "Tokens (left) and cost in USD (right) per day" in page
    svg = page.split('class="gw-usage-chart"')[1].split("</svg>")[0]
    assert "<script" not in svg and "src=" not in svg  # static SVG, nothing loaded from elsewhere
    assert "100 requests, 10 errors, 10000 input and 5000 output tokens, $2.5000" in page
    page = staff.get(USAGE, {"subject": "key:2"}).content.decode()
    assert "50 requests, 5 errors" in page


def test_every_admin_page_stays_fast_over_100000_responses(api, staff, fake_openai, django_assert_num_queries):
    conversation_id = api_conversation_with_a_tool_call(api)
    now = timezone.now()
    conversations = [Conversation(id=f"conv_bulk{n:06d}", owner=f"owner{n % 10}", model="gpt-test",
                                  created_at=now, updated_at=now - timedelta(seconds=n)) for n in range(1000)]
    Conversation.objects.bulk_create(conversations)
    Conversation.objects.filter(pk=conversation_id).update(updated_at=now + timedelta(minutes=1))
    with connection.cursor() as cursor:
        # The rows that bulk_create would make of StoredResponse(id=f"resp_bulk{n:07d}",
        # conversation_id=f"conv_bulk{n % 1000:06d}", depth=n // 1000, owner=f"owner{n % 10}",
        # subject=f"key:{n % 7}", model="gpt-test", provider="openai", status="completed",
        # created_at=now - n seconds, completed_at=now, input_tokens=10, output_tokens=20,
        # cost_usd=0.001), made by Postgres in one statement: 100,000 model instances cost this
        # test 20 of its 30 s.
        cursor.execute(
            f"INSERT INTO {StoredResponse._meta.db_table} (id, conversation_id, depth, owner, subject, model, "  # noqa: S608
            "provider, status, created_at, completed_at, settings, input_tokens, cached_tokens, cache_write_tokens, "
            "output_tokens, reasoning_tokens, usage_reported, cost_usd, worker, interrupted) "
            "SELECT 'resp_bulk' || lpad(n::text, 7, '0'), 'conv_bulk' || lpad((n %% 1000)::text, 6, '0'), n / 1000, "
            "'owner' || (n %% 10), 'key:' || (n %% 7), 'gpt-test', 'openai', 'completed', "
            "%s - n * interval '1 second', %s, '{}'::jsonb, 10, 0, 0, 20, 0, true, 0.001, '', '' "
            "FROM generate_series(0, 99999) AS n", [now, now])
        cursor.execute("ANALYZE conversations_app_storedresponse")
        cursor.execute("ANALYZE conversations_app_conversation")

    def timed(url: str, queries: int, **params: Any) -> str:
        started = time.monotonic()
        with django_assert_num_queries(queries):
            response = staff.get(url, params)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, url
        print(f"{url} {params}: {elapsed * 1000:.0f} ms")
        assert elapsed < 2.0, f"{url} {params} took {elapsed:.2f} s"
        return str(response.content.decode())

    # session, user, 4 filter choices, bounded count, estimate, page
    page = timed(RESPONSES, 9)
    assert "about" in page and "(an estimate from the database" in page and "Select all" not in page
    estimate = int(page.split("about ")[1].split(" (an estimate")[0].replace(",", ""))
    assert estimate > EXACT_LIMIT and abs(estimate - 100_003) < 20_000
    assert "estimate" in timed(RESPONSES, 9, status="completed", model="gpt-test")
    # 10,000 rows match: still counted exactly, by the bounded count alone
    assert "10,000 stored responses" in timed(RESPONSES, 8, status="completed", owner="owner3")
    page = timed(RESPONSES, 8, q="Paris")  # a search that matches few: counted exactly, no estimate
    assert "estimate" not in page
    # session, user, 2 filter choices, bounded count (1,001 rows: exact), page
    page = timed(CONVERSATIONS, 6)
    assert "1,001 conversations" in page
    page = timed(CONVERSATIONS, 6, q="Paris")
    assert f'title="{conversation_id}"' in page
    timed(change_url(Conversation.objects.get(pk="conv_bulk000007")), 5)  # 100 turns, depth 0 to 99
    timed(change_url(StoredResponse.objects.get(pk="resp_bulk0000007")), 5)
    timed(reverse("admin:conversations_app_storedresponse_delete", args=["resp_bulk0000007"]), 3)
    timed(reverse("admin:conversations_app_conversation_delete", args=[quote(conversation_id)]), 3)
    timed(USAGE, 10)
