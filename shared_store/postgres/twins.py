"""The PostgreSQL twins of the store's statements whose meaning differs from SQLite's, by the SQLite
statement's name (dialect.to_pg swaps them in). Each twin takes the same parameters as its SQLite
statement; what the twin does not need (a host's clock) it ignores.

Three families are derived from the SQLite text by a named rule, so the two cannot drift apart:
- `_moves_feed`: a statement that moves a run in the change feed takes the next value of the feed's
  sequence and records its transaction (feed_xid), instead of SQLite's MAX(feed_seq) + 1, which
  hands out duplicates under READ COMMITTED;
- `_db_clock`: "now" in due and lease times is the database's clock (gw_epoch()), the one clock that
  API hosts and runners on different machines share;
- the fence reads (FENCE_HELD) lock the run row (FOR NO KEY UPDATE): a takeover in progress is
  waited for and its result re-checked, where a plain read would see the old lease and go on;
  `_locks_guard` does the same to every guard sub-select `EXISTS (SELECT 1 FROM runs ... owner AND
  epoch)` of a fenced write.
The rest (claims, expired-lease takeover, the fenced append) are written out in statements.py."""

from __future__ import annotations

import re

from .. import queries as q
from . import statements as s
from .dialect import register_twins, respell

_FEED_SQLITE = "(SELECT COALESCE(MAX(feed_seq), 0) + 1 FROM runs)"
_FEED_PG = "nextval('runs_feed_seq')"
_FEED_XID = "feed_seq = excluded.feed_seq, feed_xid = pg_current_xact_id()"


def _pg(sqlite_text: str) -> str:
    text, numbered = respell(sqlite_text)
    if numbered:
        raise ValueError("a twin is derived from a statement with named or ? parameters only")
    return text


def _moves_feed(sqlite_text: str) -> str:
    text = sqlite_text.replace(_FEED_SQLITE, _FEED_PG)
    return text.replace("feed_seq = excluded.feed_seq", _FEED_XID)


def _db_clock(sqlite_text: str) -> str:
    # Read once per statement (an init plan): compared per row, a volatile call is no index condition.
    return sqlite_text.replace(":now", "(SELECT gw_epoch())")


# A fence written as a guard sub-select (an artifact row, a command outcome, a schedule's advance or
# child, a media job): a plain EXISTS reads the statement's snapshot and does not wait for a takeover
# that is committing, so a stale holder's write went in after it. Locking the run row in the guard
# waits for that takeover and re-checks owner and epoch on the row it committed.
_GUARD = re.compile(
    r"(EXISTS \(SELECT 1 FROM runs WHERE runs\.run_id = [:\w.]+ AND "
    r"runs\.lease_owner = :owner AND runs\.lease_epoch = :epoch)\)"
)


def _locks_guard(sqlite_text: str) -> str:
    return _GUARD.sub(r"\1 FOR NO KEY UPDATE)", sqlite_text)


def _derived() -> dict[str, str]:
    twins: dict[str, str] = {}
    for name, text in vars(q).items():
        if not name.isupper() or name.startswith("_") or not isinstance(text, str):
            continue
        pg = text
        if _FEED_SQLITE in pg:
            pg = _moves_feed(pg)
        if ":now" in pg and name in _DB_CLOCK:
            pg = _db_clock(pg)
        if _GUARD.search(pg):
            pg = _locks_guard(pg)
        if pg is not text:
            twins[name] = _pg(pg)
    return twins


# Statements whose :now is "now" for due and lease times (not a client's or a schedule's time).
_DB_CLOCK = frozenset(
    {
        "SAVE_RUN_FENCED",
        "SAVE_RUN_UNLEASED",
        "CREATE_RUN_FENCED",
        "CREATE_RUN_UNLEASED",
        "WAKE_RUN",
        "RELEASE_SETTLED",
        "WORK_PROBE",
        "DEPLOYMENT_GAUGES",
        "ENQUEUE_RUN",
        "ENQUEUE_CHILD_RUN",
    }
)

_LOCK = " FOR NO KEY UPDATE"
_IN_UNIT_FENCE = (
    f"UPDATE runs SET ledger_len = ledger_len + 1, {s.FEED_MOVE}, stalled_claims = 0 "
    "WHERE run_id = %(run_id)s RETURNING run_id, ledger_len"
)


class _Written:
    """Twins written out (their SQLite form cannot be respelled into the same meaning)."""

    CLAIM_RUNS = s.CLAIM_RUNS
    CLAIM_RUNS_UNLABELLED = s.CLAIM_RUNS_UNLABELLED
    RECLAIM_EXPIRED = s.RECLAIM_EXPIRED
    RENEW_LEASE = s.RENEW_LEASE
    APPEND_LEDGER_FENCED = s.APPEND_LEDGER_FENCED
    APPEND_LEDGER_UNLEASED = s.APPEND_LEDGER_UNLEASED
    # Inside a unit of work, whose transaction already holds the run row (FENCE_HELD, or the save).
    APPEND_LEDGER_IN_UNIT = s._APPEND_LEDGER.format(fence=_IN_UNIT_FENCE)
    FENCE_HELD = _pg(q.FENCE_HELD) + _LOCK
    # Always writes the row, due or not: SQLite skips a run already due (no row rewrite), but here that
    # took no row lock, so a runner's save of the same run did not wait for the command's transaction
    # and wrote "not due" after it (a waiting run then never saw its command: a bulk cancel of 500
    # left 1-8 pending). With the lock the save waits, and its re-wake (follow_ups.py) sees the command.
    WAKE_RUN = _pg(_db_clock(q.WAKE_RUN.split(" AND (due_at IS NULL")[0]))
    # bytea joined with a one-byte bytea comma, in seq order by the aggregate's own ORDER BY (PostgreSQL
    # does not promise a subquery's order to an aggregate).
    LEDGER_PAGE_JOINED = (
        "SELECT max(seq), string_agg(record, '\\x2c'::bytea ORDER BY seq), count(*) FROM "
        "(SELECT seq, record FROM ledger WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s) AS page"
    )
    STORE_ARTIFACT = _pg(q.STORE_ARTIFACT.replace("WHERE 1 ", "WHERE true "))
    # Pending emit_event commands: each runner's dispatch takes those no other dispatch holds (SQLite's
    # BEGIN IMMEDIATE gave them to one runner at a time; without the lock two runners both deliver,
    # and the second then waits on every row the first resolves).
    PENDING_EVENTS = _pg(q.PENDING_EVENTS) + " FOR UPDATE SKIP LOCKED"
    # The lock migrations/postgresql/0007's flow_hand_out_slots takes (same key text, same hash).
    LOCK_FLOW_KEY = "SELECT pg_advisory_xact_lock(hashtextextended('gw.flow_key:' || %(key)s, 0)) IS NULL"


def register_all() -> None:
    """Called once, on the first statement a PostgreSQL store runs."""
    import types

    derived = types.ModuleType("derived_twins")
    for name, text in _derived().items():
        setattr(derived, name, text)
    register_twins(q, derived)
    written = types.ModuleType("written_twins")
    for name, text in vars(_Written).items():
        if name.isupper():
            setattr(written, name, text)
    register_twins(q, written)
    from . import module_twins

    module_twins.register_all()
