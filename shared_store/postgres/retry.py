"""Retry a statement that PostgreSQL aborted for a serialization failure (40001) or a deadlock
(40P01): the child-finished trigger locks child then parent, derived commands lock parent then child,
so two such transactions can deadlock; the server picks one victim, which simply runs again."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psycopg

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
