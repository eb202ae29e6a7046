"""Active API keys remembered per process (identity_app.key_cache), and forgotten when any key changes.

These commit for real (transaction=True): the forgetting under test is Postgres' notification at
commit, sent by the trigger of identity_app migration 0002, whoever made the change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import OperationalError, connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from identity_app import key_cache as key_cache_module
from identity_app import keys as keys_module
from identity_app.key_cache import key_cache, reset_key_cache
from identity_app.keys import find_active_key, issue_key, revoke
from identity_app.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache(settings) -> Iterator[None]:
    reset_key_cache()
    yield
    reset_key_cache()


def test_until_it_listens_a_process_reads_every_row(monkeypatch):
    started = []
    monkeypatch.setattr(key_cache_module, "start", lambda target, name: started.append(name))
    issued = issue_key(name="a", owner="acme")
    assert queries_of(issued.key) == 2  # its row, and last_used_at written
    assert queries_of(issued.key) == 1
    assert started == ["api-key-listener"]  # asked once, in the background; tried again in 5 s


def listening() -> None:
    """Until this process listens (it starts to on its first lookup, in the background)."""
    cache = key_cache()
    assert cache is not None
    cache.get("")
    deadline = time.monotonic() + 5
    while not cache.listening:
        assert time.monotonic() < deadline, "never listened"
        time.sleep(0.01)


# How long Postgres may take to deliver the commit's notification to this process's listening
# connection: well under a millisecond on an idle server, milliseconds when its CPU is saturated (the
# listener's backend must be scheduled to send it). docs/identity.md states this window.
NOTIFICATION_DELAY = 1.0


def refused_within(key: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while find_active_key(key) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def found(key: str) -> ApiKey:
    record = find_active_key(key)
    assert record is not None
    return record


def queries_of(key: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        find_active_key(key)
    return len(queries)


def run_sql(sql: str, params: tuple[object, ...]) -> None:
    """As an operator in psql would: another connection, committed."""
    settings_dict = connection.settings_dict
    with psycopg.connect(dbname=settings_dict["NAME"], user=settings_dict["USER"], host=settings_dict["HOST"],
                         port=settings_dict["PORT"] or 5432, autocommit=True) as other:
        other.execute(sql, params)


def test_a_remembered_key_costs_no_query():
    issued = issue_key(name="a", owner="acme")
    listening()
    assert queries_of(issued.key) == 2  # its row, and last_used_at written  # its row, and last_used_at written
    assert queries_of(issued.key) == 0
    assert found(issued.key).pk == issued.record.pk


@pytest.mark.parametrize("sql", [
    "UPDATE identity_app_apikey SET revoked_at = now() WHERE id = %s",
    "DELETE FROM identity_app_apikey WHERE id = %s",
    "UPDATE identity_app_apikey SET key_hash = md5(key_hash) || md5(key_hash) WHERE id = %s",
], ids=["revoked", "deleted", "rekeyed"])
def test_a_key_changed_by_sql_elsewhere_is_refused_on_the_next_lookup(sql):
    issued = issue_key(name="a", owner="acme")
    listening()
    assert find_active_key(issued.key) is not None
    assert queries_of(issued.key) == 0  # remembered
    run_sql(sql, (issued.record.pk,))
    assert refused_within(issued.key, NOTIFICATION_DELAY)


def test_new_limits_and_owner_apply_on_the_next_lookup():
    issued = issue_key(name="a", owner="acme", rpm=10)
    listening()
    find_active_key(issued.key)
    run_sql("UPDATE identity_app_apikey SET rpm = 99, owner = 'beta', allowed_models = '[\"m\"]' WHERE id = %s",
            (issued.record.pk,))
    deadline = time.monotonic() + NOTIFICATION_DELAY
    while (record := found(issued.key)).rpm != 99 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert (record.rpm, record.owner, record.allowed_models) == (99, "beta", ["m"])


def test_a_change_in_this_process_is_forgotten_before_it_commits():
    issued = issue_key(name="a", owner="acme")
    listening()
    find_active_key(issued.key)
    revoke(issued.record)
    assert find_active_key(issued.key) is None
    other = issue_key(name="b", owner="acme", rpm=5)
    find_active_key(other.key)
    record = ApiKey.objects.get(pk=other.record.pk)
    record.rpm = 7
    record.save()  # as the admin's change form does
    assert found(other.key).rpm == 7


def test_recording_last_use_does_not_make_every_worker_forget():
    issued = issue_key(name="a", owner="acme")
    listening()
    find_active_key(issued.key)
    cache = key_cache()
    assert cache is not None
    generation = cache.generation()
    run_sql("UPDATE identity_app_apikey SET last_used_at = now() WHERE id = %s", (issued.record.pk,))
    assert queries_of(issued.key) == 0
    assert cache.generation() == generation


def test_a_row_read_while_a_change_arrived_is_not_remembered():
    issued = issue_key(name="a", owner="acme")
    listening()
    cache = key_cache()
    assert cache is not None
    generation = cache.generation()
    record = ApiKey.objects.get(pk=issued.record.pk)
    cache.forget_all()  # another greenlet handled a notification meanwhile
    cache.remember("digest", record, generation)
    assert cache.get("digest") is None


def test_a_lost_listening_connection_means_rows_are_read_until_it_is_back(monkeypatch):
    monkeypatch.setattr(key_cache_module, "RETRY_SECONDS", 3600.0)  # no retry until the test says so
    issued = issue_key(name="a", owner="acme")
    listening()
    find_active_key(issued.key)
    assert queries_of(issued.key) == 0
    with psycopg.connect(dbname="postgres", user="postgres", host="127.0.0.1", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'gateway-api-key-listener' AND datname = %s",
                      (connection.settings_dict["NAME"],))
    cache = key_cache()
    assert cache is not None
    # Until the termination reaches the socket. The server's error message may come a little before
    # its end of the connection: the first wakes the cache (which forgets, and reads the row once),
    # only the second shows the connection gone.
    deadline = time.monotonic() + 5
    while cache.listening:
        assert time.monotonic() < deadline, "the lost connection went unnoticed"
        queries_of(issued.key)
        time.sleep(0.01)
    assert queries_of(issued.key) == 1  # read, not remembered: nobody would say if it changed
    assert queries_of(issued.key) == 1
    cache._retry_at = 0.0  # the retry is due
    listening()
    find_active_key(issued.key)  # remembered again
    assert queries_of(issued.key) == 0
    run_sql("UPDATE identity_app_apikey SET revoked_at = now() WHERE id = %s", (issued.record.pk,))
    assert refused_within(issued.key, NOTIFICATION_DELAY)


def test_nothing_is_remembered_longer_than_the_ttl(settings):
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={"auth": settings.GATEWAY.auth.model_copy(update={"key_cache_ttl": 0.2})})
    reset_key_cache()
    issued = issue_key(name="a", owner="acme")
    listening()
    find_active_key(issued.key)
    assert queries_of(issued.key) == 0
    time.sleep(0.25)
    assert queries_of(issued.key) == 1


def test_a_ttl_of_zero_reads_the_row_every_time(settings):
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={"auth": settings.GATEWAY.auth.model_copy(update={"key_cache_ttl": 0})})
    reset_key_cache()
    issued = issue_key(name="a", owner="acme")
    find_active_key(issued.key)
    assert queries_of(issued.key) == 1
    assert key_cache() is None


def test_a_revoked_key_is_never_remembered():
    issued = issue_key(name="a", owner="acme")
    ApiKey.objects.filter(pk=issued.record.pk).update(revoked_at=timezone.now() - timedelta(days=1))
    assert find_active_key(issued.key) is None
    assert find_active_key(issued.key) is None


def blocked_key_reads(dbname: str) -> int:
    """Statements of this database's sessions waiting on a lock over the keys table."""
    with psycopg.connect(dbname="postgres", user="postgres", host="127.0.0.1", autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                            "AND query LIKE '%%identity_app_apikey%%'", (dbname,)).fetchone()
    assert row is not None
    return int(row[0])


def lookups_while_the_keys_table_is_locked(key: str, lookups: int) -> tuple[list[object], int]:
    """`lookups` concurrent find_active_key(key) calls, each on a thread (and connection) of its own,
    made while another session holds the keys table locked, as a slow database would keep them
    waiting; the results, and how many reads reached Postgres meanwhile."""
    results: list[object] = []

    def lookup() -> None:
        try:
            results.append(find_active_key(key))
        except Exception as error:  # noqa: BLE001 - reported by the assertions
            results.append(error)
        finally:
            connections.close_all()

    dbname = connection.settings_dict["NAME"]
    with psycopg.connect(dbname=dbname, user="postgres", host="127.0.0.1") as locker:
        locker.execute("LOCK TABLE identity_app_apikey IN ACCESS EXCLUSIVE MODE")
        threads = [threading.Thread(target=lookup) for _ in range(lookups)]
        for thread in threads:
            thread.start()
        # Every lookup has started once all would be blocked, or, sharing one read, after a while.
        deadline = time.monotonic() + 2
        while (blocked := blocked_key_reads(dbname)) < lookups and time.monotonic() < deadline:
            time.sleep(0.05)
        locker.rollback()
    for thread in threads:
        thread.join(10)
    return results, blocked


def test_concurrent_lookups_of_one_key_share_one_read_of_its_row():
    issued = issue_key(name="a", owner="acme")
    listening()
    results, blocked = lookups_while_the_keys_table_is_locked(issued.key, 8)
    assert blocked == 1
    assert [getattr(result, "pk", result) for result in results] == [issued.record.pk] * 8
    assert queries_of(issued.key) == 0  # and remembered
    assert ApiKey.objects.get(pk=issued.record.pk).last_used_at is not None


def test_lookups_waiting_on_a_failed_read_read_the_row_themselves(monkeypatch):
    issued = issue_key(name="a", owner="acme")
    listening()
    failures: list[str] = []
    real_read = keys_module._read_active_key

    def failing_once(digest, cache):
        if not failures:
            failures.append(digest)
            time.sleep(0.3)  # while the others join it
            raise OperationalError("the database went away")
        return real_read(digest, cache)

    monkeypatch.setattr(keys_module, "_read_active_key", failing_once)
    results, _ = lookups_while_the_keys_table_is_locked(issued.key, 4)
    assert sorted(type(result).__name__ for result in results) == ["ApiKey"] * 3 + ["OperationalError"]
