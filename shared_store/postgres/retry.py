"""Retry a statement that PostgreSQL aborted for a serialization failure (40001) or a deadlock
(40P01): the child-finished trigger locks child then parent, derived commands lock parent then child,
so two such transactions can deadlock; the server picks one victim, which simply runs again.

`retrying` runs one statement again (autocommit); `write_unit` runs a whole transaction of the store
again (the store's units: a claim pass, a runner's unit of work, a start, a schedule firing)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import apsw
    import psycopg

    from ..db import Database

T = TypeVar("T")
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
ATTEMPTS = 8


def retrying(conn: psycopg.Connection, work: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """Run `work` (statements on `conn`) again on 40001 / 40P01, with a short jittered backoff.

    Only where `conn` is in autocommit (each statement its own transaction): inside a caller's
    transaction the whole transaction must be retried by its owner, so the error is re-raised."""
    import psycopg

    for attempt in range(attempts):
        try:
            return work()
        except psycopg.errors.OperationalError as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            if sqlstate not in RETRIED_SQLSTATES or not conn.autocommit or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
    raise AssertionError("unreachable")


def aborted_for_retry(exc: BaseException) -> bool:
    """A store error (StoreBusy) that PostgreSQL raised for a serialization failure or a deadlock:
    the server rolled the transaction back, and running it again is the documented answer."""
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) in RETRIED_SQLSTATES


def write_unit(db: Database, work: Callable[[apsw.Connection], T], *, attempts: int = ATTEMPTS) -> T:
    """`work(conn)` in one write transaction. On PostgreSQL the WHOLE transaction runs again (a fresh
    one, `work` called anew) when the server aborted it for 40001 / 40P01: e.g. the child-finished
    trigger locks child then parent while a cascade locks parent then child. `work` must be safe to
    run again (it writes only through `conn`; nothing of a failed attempt stays). On SQLite, and
    inside a caller's transaction (which only its owner can run again), it runs once."""
    if db.backend != "postgresql" or not db.connection().get_autocommit():
        with db.write() as conn:
            return work(conn)
    # Imported here, not above: SQLite's path pays no import statement (~2% of a claim's CPU).
    from ..errors import StoreBusy

    for attempt in range(attempts):
        try:
            with db.write() as conn:
                return work(conn)
        except StoreBusy as exc:
            if attempt == attempts - 1 or not aborted_for_retry(exc):
                raise
        time.sleep(random.uniform(0, 0.002 * 2**attempt))
    raise AssertionError("unreachable")
