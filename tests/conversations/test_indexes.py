"""The conversation tables carry only indexes something reads (migration 0008): every index is
written on every turn. Django adds a LIKE 'prefix%' (varchar_pattern_ops) index beside every
indexed or primary-key CharField on Postgres, which nothing here queries; a field change that
brings one back, or an index duplicating another's first column, fails here."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

EXPECTED = {
    "conversations_app_conversation": {"conversations_app_conversation_pkey", "conversation_owner",
                                       "conversations_app_conversation_updated_at_a53388b3"},
    "conversations_app_storedresponse": {"conversations_app_storedresponse_pkey", "conversatio_convers_317c61_idx",
                                         "response_owner", "response_previous", "response_in_progress"},
    "conversations_app_item": {"conversations_app_item_pkey", "item_unique_position",
                               "conversations_app_item_text_search"},
}


def test_each_table_has_only_the_indexes_it_is_read_by() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
                       [list(EXPECTED)])
        rows = cursor.fetchall()
    assert not [name for _table, name, definition in rows if "pattern_ops" in definition]
    assert {table: {name for t, name, _ in rows if t == table} for table in EXPECTED} == EXPECTED
