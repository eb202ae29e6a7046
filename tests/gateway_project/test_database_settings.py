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


def test_a_statement_run_five_times_on_a_connection_is_prepared_there(db: None) -> None:
    # Django leaves psycopg's preparing off unless OPTIONS turns it on; the settings do (with
    # server-side binding), so Postgres stops parsing and planning the gateway's repeated statements.
    probe = "SELECT %s::int + 41 AS prepared_probe"
    with connection.cursor() as cursor:
        for _ in range(6):
            cursor.execute(probe, [1])
            assert cursor.fetchone() == (42,)
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%prepared_probe%"])
        assert cursor.fetchone() == (1,)


def test_without_server_side_binding_nothing_is_prepared() -> None:
    # DB_SERVER_SIDE_BINDING=false, for a pooler that cannot keep prepared statements.
    from tests.gateway_project.test_deploy_settings import _settings

    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "SECRET_KEY": "k" * 50}
    on = _settings("DATABASES", **env)["DATABASES"]["default"]["OPTIONS"]  # type: ignore[index]
    off = _settings("DATABASES", **env, DB_SERVER_SIDE_BINDING="false")["DATABASES"]["default"]["OPTIONS"]  # type: ignore[index]
    assert (on["server_side_binding"], on["prepare_threshold"]) == (True, 5)
    assert off["server_side_binding"] is False and "prepare_threshold" not in off


def test_the_gateways_sessions_never_jit_compile(db: None) -> None:
    # Postgres compiles a statement whose estimated cost passes jit_above_cost: ~20 ms for a chain
    # read that runs in 0.3 ms, on every chain turn once a burst had skewed the estimates.
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone() == ("off",)


def test_db_jit_and_a_jit_option_in_the_url_leave_the_servers_setting() -> None:
    from tests.gateway_project.test_deploy_settings import _settings

    def options(url: str, **env: str) -> dict[str, Any]:
        settings = _settings("DATABASES", DATABASE_URL=url, SECRET_KEY="k" * 50, **env)
        return settings["DATABASES"]["default"]["OPTIONS"]  # type: ignore[index]

    plain = "postgres://postgres@127.0.0.1:5432/postgres"
    assert options(plain)["options"] == "-c jit=off"
    assert "options" not in options(plain, DB_JIT="true")
    assert options(plain + "?options=-c%20jit%3Don")["options"] == "-c jit=on"
    assert options(plain + "?options=-c%20statement_timeout%3D5s")["options"] == "-c statement_timeout=5s -c jit=off"
