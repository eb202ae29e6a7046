"""Group commit (conversations_app.group_commit): a worker's turn writes sent together, in one round
trip and one transaction, and still each request's own outcome. gunicorn's gevent workers are the
only place it runs (tests/e2e/test_many_streams.py counts the transactions of a burst there); here
its writer's batch handling is driven directly, on real Postgres, with a probe table of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import IntegrityError, OperationalError, connection, connections

from conversations_app import group_commit as group_commit_module
from conversations_app.group_commit import GroupCommit, _Statement
from conversations_app.store import ConversationStore

pytestmark = pytest.mark.django_db(transaction=True)

INSERT = "INSERT INTO group_commit_probe (id, parent) VALUES (%s, %s)"


@pytest.fixture(autouse=True)
def probe_table() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE group_commit_probe (id text PRIMARY KEY, "
                       "parent text REFERENCES group_commit_probe (id))")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE group_commit_probe")


def rows() -> dict[str, str]:
    """Each row's id and the transaction that wrote it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, xmin::text FROM group_commit_probe")
        return dict(cursor.fetchall())


def other_session() -> psycopg.Connection[tuple[object, ...]]:
    settings_dict = connection.settings_dict
    return psycopg.connect(dbname=settings_dict["NAME"], user=settings_dict["USER"], host=settings_dict["HOST"],
                           port=settings_dict["PORT"] or 5432)


def test_a_batch_is_one_transaction_and_every_statement_is_done():
    batch = [_Statement(INSERT, [name, None], "") for name in ("a", "b", "c")]
    GroupCommit()._write(batch)
    assert [(statement.done.is_set(), statement.error) for statement in batch] == [(True, None)] * 3
    written = rows()
    assert sorted(written) == ["a", "b", "c"]
    assert len(set(written.values())) == 1  # one transaction


def test_a_failing_statement_fails_alone():
    batch = [_Statement(INSERT, ["a", None], ""), _Statement(INSERT, ["b", "missing"], ""),
             _Statement(INSERT, ["c", None], "")]
    GroupCommit()._write(batch)
    assert all(statement.done.is_set() for statement in batch)
    assert batch[0].error is None and batch[2].error is None
    assert isinstance(batch[1].error, IntegrityError)
    assert sorted(rows()) == ["a", "c"]
    GroupCommit()._write([_Statement(INSERT, ["d", "a"], "")])  # the connection is fine afterwards
    assert sorted(rows()) == ["a", "c", "d"]


def test_a_row_lock_held_elsewhere_holds_up_only_the_statement_that_needs_it():
    GroupCommit()._write([_Statement(INSERT, ["locked", None], "")])
    update = _Statement("UPDATE group_commit_probe SET parent = NULL WHERE id = %s", ["locked"], "locked")
    free = [_Statement(INSERT, ["free-1", None], ""), _Statement(INSERT, ["free-2", None], "")]
    batch = [update, *free]

    def write() -> None:
        try:
            GroupCommit()._write(batch)
        finally:
            connections.close_all()

    with other_session() as lock:
        lock.execute("SELECT 1 FROM group_commit_probe WHERE id = 'locked' FOR UPDATE")
        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 10
        while not all(statement.done.is_set() for statement in free):
            assert time.monotonic() < deadline, "the statements that need no lock waited for it"
            time.sleep(0.02)
        assert {"free-1", "free-2"} <= set(rows())
        assert not update.done.is_set()  # still waiting for the lock
        lock.rollback()
    writer.join(10)
    assert update.done.is_set() and update.error is None
    assert [statement.error for statement in (update, *free)] == [None] * 3


def test_statements_are_written_in_the_order_of_the_rows_they_lock():
    batch = [_Statement(INSERT, [name, None], key) for name, key in (("z", "conv_2"), ("y", ""), ("x", "conv_1"))]
    GroupCommit()._write(batch)
    assert [statement.lock_key for statement in batch] == ["", "conv_1", "conv_2"]


def test_a_batch_of_two_is_written_one_statement_after_the_other():
    batch = [_Statement(INSERT, ["a", None], ""), _Statement(INSERT, ["b", "missing"], "")]
    GroupCommit()._write(batch)
    assert batch[0].error is None and isinstance(batch[1].error, IntegrityError)
    assert sorted(rows()) == ["a"]


KILL_OWN_CONNECTION = "SELECT pg_terminate_backend(pg_backend_pid()) WHERE %s"


def test_a_connection_lost_under_a_batch_fails_the_batch_without_running_it_again():
    # Whether the transaction committed before the connection went cannot be known: running its
    # statements again could write a turn twice, so each request hears of the failure, as alone.
    batch = [_Statement(INSERT, ["a", None], ""), _Statement(KILL_OWN_CONNECTION, [True], ""),
             _Statement(INSERT, ["b", None], "")]
    GroupCommit()._write(batch)
    assert all(statement.done.is_set() for statement in batch)
    assert all(isinstance(statement.error, OperationalError) for statement in batch), [s.error for s in batch]
    assert rows() == {}
    GroupCommit()._write([_Statement(INSERT, ["c", None], "")])  # a new connection for the next batch
    assert sorted(rows()) == ["c"]


def test_statements_run_one_at_a_time_stop_at_the_first_without_a_connection(monkeypatch):
    batch = [_Statement(INSERT, ["a", None], ""), _Statement(INSERT, ["b", "missing"], ""),
             _Statement(KILL_OWN_CONNECTION, [True], ""), _Statement(INSERT, ["c", None], ""),
             _Statement(INSERT, ["d", None], "")]
    real_connect = connection.connect
    connects = []

    def unreachable_after_the_kill() -> None:
        # The batch's connection, the one its statements are run on after it failed, and then
        # (the killed one to replace) Postgres refusing connections.
        connects.append(time.monotonic())
        if len(connects) > 2:
            raise OperationalError("connection refused")
        real_connect()

    monkeypatch.setattr(connection, "connect", unreachable_after_the_kill)
    connection.close()
    GroupCommit()._write(batch)
    monkeypatch.undo()
    assert [type(statement.error).__name__ for statement in batch] == [
        "NoneType", "IntegrityError", "OperationalError", "OperationalError", "OperationalError"]
    assert len(connects) == 3  # one try for the rest of the batch, not one each
    assert sorted(rows()) == ["a"]


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> Iterator[GroupCommit]:
    """A group commit whose writers are threads here (greenlets in a gunicorn worker), keeping their
    connection for 0.3 s after their last statement."""
    monkeypatch.setattr(group_commit_module, "WARM_FOR", 0.3)
    batcher = GroupCommit()
    monkeypatch.setattr(group_commit_module, "group_commit", lambda: batcher)
    yield batcher
    deadline = time.monotonic() + 5
    while batcher._warm and time.monotonic() < deadline:  # their connections back before the database goes
        time.sleep(0.05)


def resting(writers: GroupCommit) -> GroupCommit:
    """Once its writer rests: a thread here goes on after its statement is done, while in a gunicorn
    worker the request's greenlet runs only once the writer waits."""
    deadline = time.monotonic() + 5
    while not writers._idle:
        assert time.monotonic() < deadline, "the writer did not come to rest"
        time.sleep(0.01)
    return writers


def test_a_writer_keeps_its_connection_between_statements_then_gives_it_back(writers):
    writers.execute(INSERT, ["a", None])
    assert resting(writers).warm_connection_alive()
    first = set(writers._warm.values())
    writers.execute(INSERT, ["b", None])
    assert set(resting(writers)._warm.values()) == first  # the same connection, not a checkout per statement
    assert len(set(rows().values())) == 2
    time.sleep(0.6)
    assert not writers.warm_connection_alive() and not writers._warm  # given back once idle


def test_a_kept_connection_postgres_closed_is_not_used_again(writers):
    writers.execute(INSERT, ["a", None])
    (kept,) = resting(writers)._warm.values()
    with other_session() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [kept.info.backend_pid])
    deadline = time.monotonic() + 5
    while writers.warm_connection_alive():  # the server's goodbye reaches the socket
        assert time.monotonic() < deadline, "a terminated connection still looked alive"
        time.sleep(0.02)
    writers.execute(INSERT, ["b", "a"])  # on a new connection, not an error
    assert sorted(rows()) == ["a", "b"]


def test_a_turn_checks_the_database_without_a_checkout_while_a_writer_keeps_one(writers, monkeypatch):
    checkouts = []
    real = connection.connect

    def counted() -> None:
        checkouts.append(1)
        real()

    monkeypatch.setattr(connection, "connect", counted)
    connection.close()
    ConversationStore().check_available()
    assert checkouts == [1]  # no writer keeps a connection yet: a checkout says whether Postgres is there
    writers.execute(INSERT, ["a", None])  # gives the caller's connection back; the writer takes its own
    resting(writers)
    ConversationStore().check_available()
    assert checkouts == [1]
    time.sleep(0.6)
    ConversationStore().check_available()
    assert checkouts == [1, 1]


def test_a_batch_that_fails_after_its_statement_was_prepared_leaves_the_connection_usable():
    # The settings prepare a statement after 5 runs on a connection; a pipeline that fails midway
    # (Postgres skips what follows the error) must not leave psycopg believing in a prepared
    # statement the server does not have.
    writer = GroupCommit()
    for n in range(8):
        writer._write([_Statement(INSERT, [f"p{n}", None], "")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%group_commit_probe%"])
        assert cursor.fetchone()[0] >= 1
    batch = [_Statement(INSERT, ["a", None], ""), _Statement(INSERT, ["b", "missing"], ""),
             _Statement(INSERT, ["c", None], ""), _Statement(INSERT, ["d", None], "")]
    writer._write(batch)  # a pipeline (3 or more), refused, then each alone
    assert [type(statement.error).__name__ for statement in batch] == ["NoneType", "IntegrityError", "NoneType",
                                                                       "NoneType"]
    for name in ("e", "f", "g", "h", "i", "j"):
        writer._write([_Statement(INSERT, [name, "a"], ""), _Statement(INSERT, [f"{name}2", "c"], ""),
                       _Statement(INSERT, [f"{name}3", "d"], "")])
    assert len(rows()) == 8 + 3 + 18
