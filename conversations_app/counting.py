"""Honest and cheap row counts for the admin's changelists over tables that grow without bound.

A count is exact when it is cheap: a bounded `COUNT(*)` over at most `EXACT_LIMIT + 1` rows (of
the filtered query) tells whether the list is small, and if it is, that is the exact number. Past
it, Postgres's own planner estimate for the same query (`EXPLAIN`, from the table statistics) is
shown, marked as an estimate and never below what the bounded count saw; other databases say
"more than N". Nothing ever counts a large table whole on a page view.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

EXACT_LIMIT = 10_000


def planner_estimate(queryset: QuerySet[Any]) -> int | None:
    """The planner's row estimate for the query (Postgres), or None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """`count` is exact up to EXACT_LIMIT rows; beyond, an estimate (`is_estimate`)."""

    is_estimate = False
    at_least = False  # no estimate to be had: "more than EXACT_LIMIT"

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        bounded = queryset.order_by().values("pk")[: EXACT_LIMIT + 1].count()
        if bounded <= EXACT_LIMIT:
            return bounded
        estimate = planner_estimate(queryset)
        if estimate is None:
            self.at_least = True
            return bounded
        self.is_estimate = True
        return max(estimate, bounded)

    @property
    def count_label(self) -> str:
        if self.at_least:
            return f"more than {EXACT_LIMIT:,}"
        if self.is_estimate:
            return f"about {self.count:,} (an estimate from the database's statistics)"
        return f"{self.count:,}"
