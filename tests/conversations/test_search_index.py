"""The admin's full-text search index, kept beside the turns' writes (conversations_app.search_index,
migration 0009): a turn's statement only notes its items pending, the indexer moves them into the
GIN-indexed ItemSearch batch by batch, and deletions take the words with the items."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from conversations_app import search_index
from conversations_app.admin_views import matching_items
from conversations_app.models import Conversation, Item, ItemSearch, SearchPending, StoredResponse
from tests.conftest import ApiClient

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the index is Postgres's")


def _items_of(response_id: str) -> set[int]:
    return set(Item.objects.filter(response_id=response_id).values_list("pk", flat=True))


def _words(item_pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT document::text FROM conversations_app_itemsearch WHERE item_id = %s", [item_pk])
        row = cursor.fetchone()
    return row[0] if row else ""


@pytest.mark.django_db
def test_a_stored_turn_only_notes_its_items_pending_and_the_indexer_computes_their_words(api: ApiClient) -> None:
    turn = api.create(model="gpt-test", input="Tell me about Lisbon").json()
    items = _items_of(turn["id"])
    assert len(items) == 2  # the input message and the answer
    assert set(SearchPending.objects.values_list("pk", flat=True)) == items
    assert not ItemSearch.objects.exists()  # nothing computed inside the turn's write

    assert search_index.index_pending() == 2
    assert not SearchPending.objects.exists()
    assert set(ItemSearch.objects.values_list("pk", flat=True)) == items
    assert "'lisbon'" in _words(min(items))  # the input message's words, stemmed as 'english' does
    assert search_index.index_pending() == 0  # each item once


@pytest.mark.django_db
@pytest.mark.parametrize("indexed", [False, True], ids=["pending", "indexed"])
def test_the_admin_search_finds_an_item_whether_indexed_yet_or_not(api: ApiClient, indexed: bool) -> None:
    turn = api.create(model="gpt-test", input="What is the weather in Reykjavik?").json()
    other = api.create(model="gpt-test", input="Tell me about Lisbon").json()
    if indexed:
        search_index.index_pending()
        assert not SearchPending.objects.exists()
    found = set(matching_items("reykjavik").values_list("response_id", flat=True))
    assert found == {turn["id"]}
    assert other["id"] in set(matching_items("Lisbon").values_list("response_id", flat=True))
    assert not matching_items("Paris").exists()
    # websearch syntax, as the admin's box takes it: a phrase, and a word left out.
    assert set(matching_items('"weather in Reykjavik"').values_list("response_id", flat=True)) == {turn["id"]}
    assert not matching_items("Reykjavik -weather").exists()


@pytest.mark.django_db
def test_items_inserted_any_way_are_noted_pending(api: ApiClient) -> None:
    conversation = api.post("/v1/conversations", {"items": [
        {"type": "message", "role": "user", "content": "A note about Oslo"}]}).json()
    added = Item.objects.get(response__isnull=True)  # an item of the Conversations API, no response
    assert SearchPending.objects.filter(pk=added.pk).exists()
    search_index.index_pending()
    assert "'oslo'" in _words(added.pk)
    assert conversation["id"]


@pytest.mark.django_db
def test_deleting_items_takes_their_words_and_a_pending_item_deleted_is_skipped(api: ApiClient) -> None:
    indexed = api.create(model="gpt-test", input="Tell me about Lisbon").json()
    search_index.index_pending()
    pending = api.create(model="gpt-test", input="Tell me about Porto").json()
    assert ItemSearch.objects.count() == 2 and SearchPending.objects.count() == 2

    # Deleted the way purge_conversations and the admin's delete do it: through the ORM, whose
    # cascade does not know of ItemSearch; Postgres's own cascade takes the words.
    for response_id in (indexed["id"], pending["id"]):
        Conversation.objects.filter(pk=StoredResponse.objects.get(pk=response_id).conversation_id).delete()
    assert not Item.objects.exists()
    assert not ItemSearch.objects.exists()
    assert SearchPending.objects.count() == 2  # no key to the item: the indexer drops them
    assert search_index.index_pending() == 0
    assert not SearchPending.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_batches_run_at_once_index_each_item_exactly_once() -> None:
    now = timezone.now()
    conversation = Conversation.objects.create(id="conv_bulk", owner="acme", model="m", created_at=now, updated_at=now)
    response = StoredResponse.objects.create(id="resp_bulk", conversation=conversation, owner="acme", model="m",
                                             provider="p", status="completed", settings={}, created_at=now)
    Item.objects.bulk_create([Item(response=response, kind=Item.Kind.OUTPUT, position=position,
                                   item_id=f"msg_{position}", type="message",
                                   data={"type": "message", "content": [{"text": f"word{position} shared"}]})
                              for position in range(1200)])
    assert SearchPending.objects.count() == 1200
    totals: list[int] = []
    errors: list[BaseException] = []

    def index() -> None:
        try:
            totals.append(search_index.index_pending(batch_size=100))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=index) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(totals) == 1200
    assert ItemSearch.objects.count() == 1200 and not SearchPending.objects.exists()
    assert matching_items("word1199").count() == 1 and matching_items("shared").count() == 1200


@pytest.mark.django_db(transaction=True)
def test_the_migration_notes_items_stored_before_it_pending_and_drops_the_index_in_the_write() -> None:
    def migrate(target: str) -> None:
        executor = MigrationExecutor(connection)
        executor.migrate([("conversations_app", target)])

    def indexes() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'conversations_app_item'")
            return {row[0] for row in cursor.fetchall()}

    migrate("0008_fewer_indexes")
    try:
        assert "conversations_app_item_text_search" in indexes()
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO conversations_app_item (response_id, kind, position, item_id, type, data) "
                           "VALUES (NULL, 0, 0, 'msg_old', 'message', '{\"text\": \"stored before Bergen\"}')")
    finally:
        migrate("0009_search_index_off_the_write_path")
    old = Item.objects.get(item_id="msg_old")
    assert "conversations_app_item_text_search" not in indexes()
    assert list(SearchPending.objects.values_list("pk", flat=True)) == [old.pk]
    assert list(matching_items("Bergen").values_list("pk", flat=True)) == [old.pk]  # found while pending
    assert search_index.index_pending() == 1
    assert list(matching_items("Bergen").values_list("pk", flat=True)) == [old.pk]



@pytest.mark.django_db
def test_manage_py_index_search_indexes_what_is_pending_and_prints_how_many(api: ApiClient) -> None:
    api.create(model="gpt-test", input="Tell me about Lisbon")
    out = io.StringIO()
    call_command("index_search", stdout=out)
    assert out.getvalue().strip() == "2"
    assert not SearchPending.objects.exists() and ItemSearch.objects.count() == 2


@pytest.mark.django_db
def test_a_run_stops_after_its_batches_and_the_next_goes_on(api: ApiClient) -> None:
    for word in ("Lisbon", "Porto", "Faro"):
        api.create(model="gpt-test", input=f"Tell me about {word}")  # 6 items
    assert search_index.index_pending(max_batches=2, batch_size=2) == 4  # a worker's tick: bounded
    assert SearchPending.objects.count() == 2
    assert search_index.index_pending(max_batches=2, batch_size=2) == 2
    assert not SearchPending.objects.exists()
