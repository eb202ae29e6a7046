"""benchmarks/turn_write.py: both states measured for every size, and the admin's index left in
place as migration 0007 made it."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks.turn_write import INDEX, measure, report

pytestmark = [pytest.mark.django_db(transaction=True),  # DDL after inserts: nothing deferred pending
              pytest.mark.skipif(connection.vendor != "postgresql", reason="the index is Postgres's")]


def test_it_measures_both_states_for_every_size_and_puts_the_index_back() -> None:
    figures = measure([5, 60], writes=3, rounds=2)
    assert set(figures) == {(indexed, words) for indexed in (True, False) for words in (5, 60)}
    assert all(len(values) == 6 and all(value > 0 for value in values) for values in figures.values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'conversations_app_item'")
        assert INDEX in {row[0] for row in cursor.fetchall()}
    table = report(figures, [5, 60]).splitlines()
    assert len(table) == 4 and table[2].startswith("| 5 |") and table[3].startswith("| 60 |")
