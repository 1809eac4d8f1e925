"""The hot statements stay on their indexes (a plan regression is a performance cliff)."""

from __future__ import annotations

import pytest

from shared_store import queries as q
from shared_store.leases import claim_statement

pytestmark = pytest.mark.sqlite_only("SQLite's query plans (EXPLAIN QUERY PLAN) and index names")

PLANS = [
    (q.FIND_COMPLETED_RESULT, ("r", "k"), "ledger_idempotency"),
    (q.LEDGER_PAGE, ("r", 0, 10), "PRIMARY KEY (run_id=? AND seq>?)"),
    (
        q.CLAIM_RUNS,
        {"owner": "o", "expires_at": 1.0, "now": 1.0, "n": 4, "labels": "[]"},
        "COVERING INDEX runs_claim_order",
    ),
    (
        q.CLAIM_RUNS_UNLABELLED,
        {"owner": "o", "expires_at": 1.0, "now": 1.0, "n": 4},
        "COVERING INDEX runs_claim_order",
    ),
    # ... and the UPDATE finds the claimed rows by rowid (no second lookup through the run_id key).
    (
        q.CLAIM_RUNS_UNLABELLED,
        {"owner": "o", "expires_at": 1.0, "now": 1.0, "n": 4},
        "INTEGER PRIMARY KEY (rowid=?)",
    ),
    # ... also as SQLite runs them, with the batch size written into the LIMIT.
    (
        claim_statement(True, 16, "sqlite"),
        {"owner": "o", "expires_at": 1.0, "now": 1.0, "labels": "[]"},
        "COVERING INDEX runs_claim_order",
    ),
    (
        claim_statement(False, 16, "sqlite"),
        {"owner": "o", "expires_at": 1.0, "now": 1.0},
        "COVERING INDEX runs_claim_order",
    ),
    (claim_statement(False, 1, "sqlite"), {"owner": "o", "expires_at": 1.0, "now": 1.0}, "rowid=?"),
    (q.RECLAIM_EXPIRED, {"now": 1.0}, "runs_leased"),
    (q.FEED_SINCE, (0, 10), "runs_feed"),
    (q.LIST_EVENT_WAITERS, ('["k"]', 10), "runs_event_waiters"),
    (q.LIST_EVENT_WAITERS_BY_PREFIX, ("k", "k\U0010ffff", 10), "runs_event_waiters"),
    (q.PENDING_COMMANDS, ("r", 10), "commands_pending"),
    (q.LIST_DUE_WAIT_UNTIL, ("2030-01-01", 10), "runs_wait_until"),
    (q.WORK_PROBE, {"now": 1.0, "labels": "[]"}, "COVERING INDEX runs_claim_order"),
    (q.WORK_PROBE, {"now": 1.0, "labels": "[]"}, "runs_leased"),
    (q.WORK_PROBE, {"now": 1.0, "labels": "[]"}, "commands_pending_events"),
    (q.QUEUE_DEPTH, (1.0,), "COVERING INDEX runs_claim_order"),
    # flow control: a key's slots, held runs and recent starts are index seeks on the key
    (q.KEY_SLOTS, ("k",), "runs_key_slots"),
    (q.KEY_OLDEST_SLOT, ("k",), "runs_key_slots"),
    (q.KEY_BEGUN_SINCE, ("k", 1.0), "runs_key_begun"),
    (q.ADMIT_HELD, {"key": "k", "now": 1.0}, "runs_key_held"),
    (q.ADMIT_HELD, {"key": "k", "now": 1.0}, "runs_key_slots"),
    (q.REQUIRED_LABEL_SETS, (), "runs_requires"),
    (q.RUN_FLOW, ("r",), "sqlite_autoindex_runs_1"),
    (q.PENDING_RUN_COMMANDS, ("r", 10), "commands_pending"),
    (q.PENDING_EVENTS, (10,), "commands_pending_events"),
    (q.EVENT_WAITER_IDS, ('["k"]',), "runs_event_waiters"),
    (
        q.EVENT_WAITER_IDS_PLAIN,
        {"name": "k", "scope": "session", "scope_id": "s"},
        "runs_event_waiters",
    ),
    (q.ACTIVE_CHILDREN, ("r",), "runs_parent"),
    (q.SESSION_KINDS, ("s",), "runs_session_created"),
    (q.ARTIFACTS_PAGE_OF_RUN, ("r", 10, 0), "artifacts_run"),
]


@pytest.mark.parametrize(("sql", "params", "index"), PLANS, ids=[f"{i}-{p[2]}" for i, p in enumerate(PLANS)])
def test_statement_uses_its_index(db, sql: str, params, index: str) -> None:
    plan = " | ".join(str(row[-1]) for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params))
    assert index in plan, plan
    # The claim walks runs_claim_order in (priority, claim order) and stops after n due rows: an
    # ordered walk of a partial index under a LIMIT (bench/bench_store.py measures it, 1,000 keys
    # included), never a walk of the table. The walk reads the index alone (COVERING: the claim's
    # subquery, the work probe and the queue depth read no table row), which the PLANS rows pin.
    plan = plan.replace(
        "SCAN runs USING COVERING INDEX runs_claim_order", "index-only walk of runs_claim_order"
    )
    # No statement here may scan a whole table.
    assert "SCAN runs" not in plan and "SCAN ledger" not in plan and "SCAN r " not in plan, plan
