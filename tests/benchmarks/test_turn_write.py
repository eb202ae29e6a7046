"""benchmarks/turn_write.py: both states measured for every size, and the schema left as migration
0009 made it (the trigger back, the old index gone)."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks.turn_write import measure, report
from conversations_app.models import SearchPending

pytestmark = [pytest.mark.django_db(transaction=True),  # DDL after inserts: nothing deferred pending
              pytest.mark.skipif(connection.vendor != "postgresql", reason="the index is Postgres's")]


def test_it_measures_both_states_for_every_size_and_restores_the_schema() -> None:
    figures = measure([5, 60], writes=3, rounds=2)
    assert set(figures) == {(state, words) for state in ("in the statement", "now", "indexer") for words in (5, 60)}
    assert all(len(figures[(state, words)]) == 6 for state in ("in the statement", "now") for words in (5, 60))
    assert all(value > 0 for values in figures.values() for value in values)
    assert not SearchPending.objects.exists()  # the indexer ran after each size's writes
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'conversations_app_item'::regclass "
                       "AND NOT tgisinternal")
        assert [row[0] for row in cursor.fetchall()] == ["conversations_app_item_search_pending"]
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'conversations_app_item'")
        assert "conversations_app_item_text_search" not in {row[0] for row in cursor.fetchall()}
    table = report(figures, [5, 60]).splitlines()
    assert len(table) == 4 and table[2].startswith("| 5 |") and table[3].startswith("| 60 |")
