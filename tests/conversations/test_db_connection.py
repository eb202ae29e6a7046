"""conversations_app.db_connection: questions about the caller's database connection (is it in a
transaction, give it back, which database) answered without making a connection object where the
caller has none. Under gevent each greenlet gets its own, and a stream's helpers and each WebSocket
turn are new greenlets: each used to be made one (a DatabaseWrapper and six helpers) just to hear
that it had nothing to give back. Threads stand in for greenlets here: Django keeps connection
objects per thread the same way."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

from conversations_app import db_connection, group_commit, turn_statements
from conversations_app.api_store import ApiConversationStore
from conversations_app.models import StoredResponse
from conversations_app.store import ConversationStore, _in_one_statement, release_connection

pytestmark = pytest.mark.django_db(transaction=True)


def in_a_thread(work: Callable[[], Any]) -> tuple[Any, list[str]]:
    """`work()`'s result in a new thread, and the connection objects that thread had made by its end."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((work(), [wrapper.alias for wrapper in connections.all(initialized_only=True)]))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert outcome, "the thread failed"
    return outcome[0]


def test_what_a_turn_asks_of_the_connection_makes_no_connection_object():
    def ask() -> list[Any]:
        release_connection()
        return [db_connection.in_transaction(), group_commit.group_commit(), ConversationStore().backend,
                ApiConversationStore().backend, _in_one_statement(""), db_connection.vendor()]

    answers, made = in_a_thread(ask)
    assert answers == [False, None, "postgres", "postgres", True, "postgresql"]
    assert made == []
    # The same answers as the connection object's own.
    assert db_connection.vendor() == connection.vendor


def test_a_connection_in_use_is_given_back_outside_a_transaction_only():
    def use_then_release() -> list[bool]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        inside = []
        with transaction.atomic():
            inside.append(db_connection.in_transaction())
            db_connection.release()
            inside.append(connection.connection is not None)  # kept: the transaction needs it
        db_connection.release()
        return [*inside, db_connection.in_transaction(), connection.connection is None]

    answers, made = in_a_thread(use_then_release)
    assert answers == [True, True, False, True]
    assert made == ["default"]


def test_a_statements_values_are_prepared_without_a_connection_object():
    # What the opening write's helper does before handing its statement over: JSON into Jsonb,
    # the decimal cost rounded, as the ORM's INSERT prepares them.
    def prepare() -> tuple[str, list[Any]]:
        columns, _placeholders, params = turn_statements._row(StoredResponse, {
            "id": "resp_x", "conversation_id": "conv_x", "settings": {"a": [1, 2]}, "cost_usd": "0.1234567891"})
        return columns, params

    prepare()  # once per process, a field works out its default with the caller's connection object
    (columns, params), made = in_a_thread(prepare)
    assert made == []
    prepared = dict(zip([column.strip('" ') for column in columns.split(",")], params, strict=True))
    assert type(prepared["settings"]).__name__ == "Jsonb" and prepared["settings"].obj == {"a": [1, 2]}
    assert str(prepared["cost_usd"]) == str(StoredResponse._meta.get_field("cost_usd").get_db_prep_save(
        "0.1234567891", connection))
