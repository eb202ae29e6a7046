"""The DATABASES settings for Postgres really reach psycopg_pool through Django 5.2's pool."""

from __future__ import annotations

from typing import Any

from django.db import connection


def test_the_pool_settings_reach_psycopg_pool_through_django(db: None, settings: Any) -> None:
    # Django 5.2 builds the pool from OPTIONS["pool"], the connection kwargs from OPTIONS and
    # `check=` from CONN_HEALTH_CHECKS: these are the values a worker really runs with.
    configured = settings.DATABASES["default"]
    pool = connection.pool
    assert configured["CONN_HEALTH_CHECKS"] is True
    assert pool.timeout == configured["OPTIONS"]["pool"]["timeout"] <= 2
    assert pool.reconnect_timeout == configured["OPTIONS"]["pool"]["reconnect_timeout"]
    assert pool.kwargs["connect_timeout"] == configured["OPTIONS"]["connect_timeout"]
    # CONN_HEALTH_CHECKS became psycopg_pool's check (wrapped by gateway_project.db_pool).
    assert pool._check is not None
