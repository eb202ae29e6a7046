"""The DATABASES settings for Postgres really reach psycopg_pool through Django 5.2's pool."""

from __future__ import annotations

from typing import Any

from django.db import connection


def test_the_pool_settings_reach_psycopg_pool_through_django(db: None, settings: Any) -> None:
    # Django 5.2 builds the pool from OPTIONS["pool"] and the connection kwargs from OPTIONS: these
    # are the values a worker really runs with. Connections are checked by the gateway's backend at
    # checkout (tests/gateway_project/test_db_pool.py), not by the pool with its backoff.
    configured = settings.DATABASES["default"]
    pool = connection.pool  # type: ignore[attr-defined]  # the postgresql backend's, not in the base class
    assert configured["CONN_HEALTH_CHECKS"] is False
    assert pool.timeout == configured["OPTIONS"]["pool"]["timeout"] <= 2
    assert pool.reconnect_timeout == configured["OPTIONS"]["pool"]["reconnect_timeout"]
    assert pool.max_idle == configured["OPTIONS"]["pool"]["max_idle"] == 60
    assert pool.kwargs["connect_timeout"] == configured["OPTIONS"]["connect_timeout"]
