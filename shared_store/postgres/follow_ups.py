"""Statements PostgreSQL runs right after a SQLite statement of the same meaning, in the same
transaction, where one statement cannot be right under READ COMMITTED.

A run's save (and a settling release) computes its next due time from its pending commands and its
finished child (queries._DUE). On SQLite the writer holds the whole db, so nothing commits in between.
On PostgreSQL a command appended while the save waits for the run row's lock commits first (its
WAKE_RUN made the run due); the save then proceeds on the newest row, but its sub-selects still read
the snapshot its statement started with, which lacks that command: it writes "not due" over the wake,
and the command waits forever (measured: a bulk cancel of 500 running runs left 2 pending). The
follow-up is a new statement, so a new snapshot: it sees every command committed before the save took
the lock, and makes the run due again. A command committing later waits for this transaction's lock
and wakes the run itself."""

from __future__ import annotations

from .. import queries as q

REWAKE = (
    "UPDATE runs SET due_at = gw_epoch() WHERE run_id = %(run_id)s "
    "AND (due_at IS NULL OR due_at > gw_epoch()) "
    "AND (EXISTS (SELECT 1 FROM commands WHERE commands.run_id = %(run_id)s AND commands.status = 'pending' "
    "AND commands.type != 'emit_event') "
    "OR (CAST(%(paused)s AS integer) = 0 AND EXISTS (SELECT 1 FROM runs c WHERE c.run_id = %(sub_run_id)s "
    "AND c.status IN ('completed', 'failed', 'cancelled'))))"
)


def follow_ups() -> dict[str, str]:
    """SQLite statement text -> the PostgreSQL statement to run after it (when it changed a row)."""
    saves = (q.SAVE_RUN_FENCED, q.SAVE_RUN_UNLEASED, q.CREATE_RUN_FENCED, q.CREATE_RUN_UNLEASED)
    return {**{sql: REWAKE for sql in saves}, q.RELEASE_SETTLED: REWAKE}
