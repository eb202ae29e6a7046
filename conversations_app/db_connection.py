"""The caller's database connection object, looked at without making one where there is none.

Django makes a connection object (a DatabaseWrapper and its six helpers: about 4 KB, and 40-70 µs
of CPU on the benchmark VM) the first time a thread, or under gevent a greenlet, touches
`django.db.connection`, even only to ask whether it is in a transaction, to close it, or to learn
which database it talks to. A stream's opening write runs in a helper greenlet and each WebSocket
turn in one of its own, so each of them made one just to hear that it had nothing to give back:
in a WebSocket turn without storage, 2-3 % of its CPU (issue 13). Here those questions are
answered from the connection objects the caller has already made (`connections.all(
initialized_only=True)`) and from the settings, and values are prepared for a statement with a
connection object of the process's own that is never connected (`for_preparing_values`).
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend


def own_connection() -> BaseDatabaseWrapper | None:
    """The caller's connection object, or None when it has not made one."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.alias == DEFAULT_DB_ALIAS:
            return wrapper
    return None


def in_transaction() -> bool:
    """Whether the caller is inside `transaction.atomic()` (never, without a connection object)."""
    own = own_connection()
    return own is not None and own.in_atomic_block


def release() -> None:
    """Give the caller's connection back (to the pool), unless it is inside a transaction."""
    own = own_connection()
    if own is not None and not own.in_atomic_block:
        own.close()


def vendor() -> str:
    """The database's kind as Django names it ("postgresql", "sqlite"), from the settings: the
    backend's class says it, no connection object is needed."""
    return str(load_backend(connections.settings[DEFAULT_DB_ALIAS]["ENGINE"]).DatabaseWrapper.vendor)


def backend() -> str:
    """The stores' backend as their metrics and spans name it: "postgres", "sqlite"."""
    kind = vendor()
    return "postgres" if kind == "postgresql" else kind


_preparer: BaseDatabaseWrapper | None = None


def for_preparing_values() -> BaseDatabaseWrapper:
    """A connection object of the default database that never connects, one per process, for what
    needs only its backend's operations: a field's `get_db_prep_save` (a JSON value into psycopg's
    Jsonb, a decimal rounded to its column) and quoting names. Asking the caller's own would make
    one in every greenlet that builds a statement (a stream's opening write runs in a helper)."""
    global _preparer
    if _preparer is None:
        settings_dict = connections.settings[DEFAULT_DB_ALIAS]
        _preparer = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)
    return _preparer
