"""The same writes on a migrated SQLite db and a migrated PostgreSQL db leave the same rows: the
PL/pgSQL twins of the SQLite triggers (parent wake-up, claim order, slots, cancels, expiry, webhook
deliveries, the ledger's run counters) behave alike. Times a trigger takes from the clock and random
delivery ids are compared by kind ("a time near now"), everything else exactly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from shared_store import Database
from shared_store import migrate as sqlite_migrate
from tests.pg.fixtures import PgDatabase

T = "2026-01-01T00:00:00+00:00"
RUN_COLUMNS = (
    "run_id, workflow_id, status, created_at, updated_at, parent_run_id, wait_reason, wait_key, "
    "concurrency_key, slot, hold, priority, due_at, fair_tag, ttl_s, webhook_url, lease_owner, claim_order"
)

# Each write: SQL with `?` placeholders (PostgreSQL gets %s), and its parameters.
WRITES: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO flow_keys (key, max_concurrent, count_waiting, updated_at) VALUES ('k', 1, 0, ?)", (T,)),
    ("INSERT INTO flow_keys (key, max_concurrent, count_waiting, updated_at) VALUES ('kw', 1, 1, ?)", (T,)),
    (
        "INSERT INTO webhooks (webhook_id, url, events, workflow_id, tag, secrets, created_at) VALUES "
        "('w1', 'http://a', ?, 'b@', NULL, ?, ?), ('w2', 'http://b', ?, NULL, 'blue', ?, ?), "
        "('w3', 'http://c', ?, NULL, NULL, ?, ?)",
        (
            b'["run.completed", "run.failed"]',
            b"[]",
            T,
            b'["run.completed"]',
            b"[]",
            T,
            b'["run.waiting", "run.cancelled"]',
            b"[]",
            T,
        ),
    ),
    (
        # claim_order given as the store's own inserts write it (SQLite has no insert trigger for it
        # since migration 0013; PostgreSQL's BEFORE trigger sets it again, to the same values).
        f"INSERT INTO runs ({RUN_COLUMNS}) VALUES "
        "('p', 'b@1:f', 'waiting', ?, ?, NULL, 'subworkflow', 'subworkflow:c', NULL, 0, 0, 3, NULL, NULL, NULL, NULL, NULL, NULL), "
        "('c', 'b@1:f', 'running', ?, ?, 'p', NULL, NULL, NULL, 0, 0, 3, 5.0, NULL, 60.0, 'http://own', NULL, 5.0), "
        "('a', 'x@1:f', 'running', ?, ?, NULL, NULL, NULL, 'k', 1, 0, 3, 7.0, NULL, NULL, NULL, NULL, 7.0), "
        "('b', 'x@1:f', 'queued', '2026-01-01T00:00:01', ?, NULL, NULL, NULL, 'k', 0, 1, 3, NULL, 2.0, NULL, NULL, NULL, 2.0), "
        "('h', 'x@1:f', 'queued', '2026-01-01T00:00:02', ?, NULL, NULL, NULL, 'k', 0, 1, 5, NULL, 3.0, NULL, NULL, NULL, 3.0), "
        "('w', 'x@1:f', 'running', ?, ?, NULL, NULL, NULL, 'kw', 1, 0, 3, 9.0, NULL, NULL, NULL, NULL, 9.0), "
        "('x', 'x@1:f', 'queued', ?, ?, NULL, NULL, NULL, 'kw', 0, 1, 3, NULL, NULL, NULL, NULL, NULL, NULL), "
        "('q', 'b@1:f', 'queued', ?, ?, NULL, NULL, NULL, NULL, 0, 0, 3, 40.0, 30.0, NULL, NULL, NULL, 30.0)",
        (T, T, T, T, T, T, T, T, T, T, T, T, T, T),
    ),
    ("INSERT INTO run_tags (tag, created_at, run_id) VALUES ('blue', ?, 'c')", (T,)),
    ("INSERT INTO ledger (run_id, seq, record) VALUES ('c', 1, ?), ('c', 2, ?)", (b"r1", b"r2")),
    ("UPDATE runs SET status = 'completed' WHERE run_id = 'c'", ()),
    ("UPDATE runs SET status = 'completed' WHERE run_id = 'a'", ()),  # slot to h (priority 5)
    ("UPDATE runs SET status = 'waiting', wait_reason = 'until' WHERE run_id = 'w'", ()),  # kw keeps it
    (
        "INSERT INTO commands (command_id, run_id, type, payload, ts) VALUES ('c1', 'b', 'cancel', ?, ?)",
        (b"{}", T),
    ),
    ("UPDATE runs SET status = 'cancelled' WHERE run_id = 'b'", ()),
    ("UPDATE runs SET status = 'running' WHERE run_id = 'q'", ()),
    ("UPDATE runs SET status = 'waiting', wait_reason = 'user', wait_key = 'k1' WHERE run_id = 'q'", ()),
    ("UPDATE runs SET status = 'waiting', wait_reason = 'user', wait_key = 'k1' WHERE run_id = 'q'", ()),
    ("UPDATE runs SET status = 'waiting', wait_reason = 'user', wait_key = 'k2' WHERE run_id = 'q'", ()),
]


def _kind(value: Any, now: float) -> Any:
    """A time a trigger took from the clock becomes "now" (+ how far ahead, whole seconds)."""
    if isinstance(value, float) and abs(value - now) < 3_600:
        return "now"
    if isinstance(value, float) and abs(value - now - 86_400) < 3_600:
        return "now+1d"
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _snapshot(
    rows_by_table: dict[str, list[tuple[Any, ...]]], now: float
) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: sorted((tuple(_kind(v, now) for v in row) for row in rows), key=repr)
        for t, rows in rows_by_table.items()
    }


READS = {
    "runs": "SELECT run_id, status, slot, hold, due_at, claim_order, ledger_len, stalled_claims, expires_at "
    "FROM runs",
    "deliveries": "SELECT webhook_id, run_id, event, url, status, attempts, next_attempt_at, retry_until, "
    "length(delivery_id), substr(delivery_id, 1, 4) FROM webhook_deliveries",
    "commands": "SELECT command_id, run_id, type, status FROM commands",
}


def test_the_same_writes_leave_the_same_rows(pg_db: PgDatabase, tmp_path: Path) -> None:
    now = time.time()
    db = Database(tmp_path / "gateway.sqlite3")
    try:
        sqlite_migrate(db)
        for sql, params in WRITES:
            with db.write() as conn:
                conn.execute(sql, params)
        sqlite = {name: [tuple(r) for r in db.query(sql)] for name, sql in READS.items()}
    finally:
        db.close()
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        for sql, params in WRITES:
            conn.execute(sql.replace("?", "%s"), params)
        pg = {name: [tuple(r) for r in conn.execute(sql)] for name, sql in READS.items()}
    expected = _snapshot(sqlite, now)
    assert _snapshot(pg, now) == expected
    # The scenario did what it is for (so equality above is not two empty tables).
    runs = {r[0]: r for r in expected["runs"]}
    assert runs["p"][4] == "now" and runs["c"][8] == "now", "parent woken, child's expiry set"
    assert (runs["h"][2], runs["h"][3], runs["b"][3]) == (1, 0, 0), "slot to h; the cancel un-held b"
    assert (runs["w"][2], runs["x"][3]) == (1, 1), "a waiting run of a count_waiting key keeps its slot"
    assert (runs["c"][6], runs["q"][5]) == (2, 40.0), "ledger counter; claim order follows due_at"
    # c: w1, w2 (tag) and its own url; b: cancelled (w3); q: waiting for a user, twice (k1, k2).
    assert len(expected["deliveries"]) == 6
