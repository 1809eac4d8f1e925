"""The PL/pgSQL twins of the SQLite triggers do what the SQLite ones do (a real server)."""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.pg.fixtures import PgDatabase

NOW = "2026-01-01T00:00:00+00:00"


def _run(conn: psycopg.Connection, run_id: str, **columns: object) -> None:
    values = {"run_id": run_id, "workflow_id": "b@1:f", "status": "running", "created_at": NOW,
              "updated_at": NOW, **columns}  # fmt: skip
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(values.values()))


def _one(conn: psycopg.Connection, sql: str, *params: object) -> tuple:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row


@pytest.fixture
def conn(pg_db: PgDatabase):
    with psycopg.connect(pg_db.dsn, autocommit=True) as connection:
        yield connection


def test_ledger_append_moves_the_run_in_the_feed(conn: psycopg.Connection) -> None:
    _run(conn, "r1", stalled_claims=2)
    before = _one(conn, "SELECT feed_seq FROM runs WHERE run_id = 'r1'")[0]
    with conn.transaction():
        conn.execute("INSERT INTO ledger (run_id, seq, record) VALUES ('r1', 1, 'x'), ('r1', 2, 'y')")
        xid = _one(conn, "SELECT pg_current_xact_id()::text")[0]
    ledger_len, feed_seq, feed_xid, stalled = _one(
        conn, "SELECT ledger_len, feed_seq, feed_xid::text, stalled_claims FROM runs WHERE run_id = 'r1'"
    )
    assert (ledger_len, feed_xid, stalled) == (2, xid, 0)
    assert feed_seq > before


def test_child_finishing_makes_its_waiting_parent_due_by_the_db_clock(conn: psycopg.Connection) -> None:
    _run(conn, "p", status="waiting", wait_reason="subworkflow", wait_key="subworkflow:c")
    _run(conn, "other", status="waiting", wait_key="subworkflow:x")
    _run(conn, "c", parent_run_id="p")
    _run(conn, "c2", parent_run_id="other")
    conn.execute("UPDATE runs SET status = 'completed' WHERE run_id IN ('c', 'c2')")
    due, db_now = _one(conn, "SELECT due_at, gw_epoch() FROM runs WHERE run_id = 'p'")
    assert due is not None and 0 <= db_now - due < 60
    assert _one(conn, "SELECT due_at FROM runs WHERE run_id = 'other'") == (None,)


def test_claim_order_follows_status_fair_tag_and_due(conn: psycopg.Connection) -> None:
    _run(conn, "q", status="queued", due_at=50.0, fair_tag=10.0)
    assert _one(conn, "SELECT claim_order FROM runs WHERE run_id = 'q'") == (10.0,)
    conn.execute("UPDATE runs SET status = 'running' WHERE run_id = 'q'")
    assert _one(conn, "SELECT claim_order FROM runs WHERE run_id = 'q'") == (50.0,)
    conn.execute("UPDATE runs SET due_at = 70.0 WHERE run_id = 'q'")
    assert _one(conn, "SELECT claim_order FROM runs WHERE run_id = 'q'") == (70.0,)


def test_freed_slot_goes_to_the_next_held_run(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO flow_keys (key, max_concurrent, updated_at) VALUES ('k', 1, %s)", (NOW,))
    _run(conn, "a", concurrency_key="k", slot=1)
    _run(conn, "b", concurrency_key="k", hold=1, status="queued", created_at="2026-01-01T00:00:01")
    _run(conn, "c", concurrency_key="k", hold=1, status="queued", created_at="2026-01-01T00:00:02")
    conn.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'a'")
    rows = conn.execute("SELECT run_id, slot, hold, due_at IS NOT NULL FROM runs ORDER BY run_id").fetchall()
    assert rows == [("a", 0, 0, False), ("b", 1, 0, True), ("c", 0, 1, False)]
    # A cancel reaches a held run at once.
    conn.execute(
        "INSERT INTO commands (command_id, run_id, type, payload, ts) VALUES ('x', 'c', 'cancel', '{}', %s)",
        (NOW,),
    )
    assert _one(conn, "SELECT hold FROM runs WHERE run_id = 'c'") == (0,)


def test_ending_a_run_writes_its_webhook_deliveries_and_expiry(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO webhooks (webhook_id, url, events, workflow_id, tag, secrets, created_at) VALUES "
        "('w1', 'http://a', '[\"run.completed\"]', 'b@', NULL, '[]', %s),"
        "('w2', 'http://b', '[\"run.failed\"]', NULL, NULL, '[]', %s),"
        "('w3', 'http://c', '[\"run.completed\"]', NULL, 'blue', '[]', %s)",
        (NOW, NOW, NOW),
    )
    _run(conn, "r", webhook_url="http://own", ttl_s=100.0)
    conn.execute("INSERT INTO run_tags (tag, created_at, run_id) VALUES ('blue', %s, 'r')", (NOW,))
    conn.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'r'")
    rows = conn.execute(
        "SELECT delivery_id, webhook_id, url, event, retry_until - next_attempt_at, created_at "
        "FROM webhook_deliveries ORDER BY url"
    ).fetchall()
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("w1", "http://a", "run.completed", 86400.0),
        ("w3", "http://c", "run.completed", 86400.0),
        (None, "http://own", "run.completed", 86400.0),
    ]
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", r[0]) for r in rows)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", r[5]) for r in rows)
    expires, db_now = _one(conn, "SELECT expires_at, gw_epoch() FROM runs WHERE run_id = 'r'")
    assert 0 < expires - db_now <= 100.0
    # Waiting for a user fires run.waiting once per wait key.
    conn.execute(
        "INSERT INTO webhooks (webhook_id, url, events, secrets, created_at) "
        "VALUES ('w4', 'http://d', '[\"run.waiting\"]', '[]', %s)",
        (NOW,),
    )
    _run(conn, "u")
    for key in ("k1", "k1", "k2"):
        conn.execute(
            "UPDATE runs SET status = 'waiting', wait_reason = 'user', wait_key = %s WHERE run_id = 'u'",
            (key,),
        )
    assert _one(conn, "SELECT count(*) FROM webhook_deliveries WHERE run_id = 'u'") == (2,)
