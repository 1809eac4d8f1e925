"""Chaos fixtures: the trial count and seed from the environment, and the store's invariants.

CHAOS_TRIALS (default 20: the CI short form; 200: the long form) and CHAOS_SEED (default random)
drive the SIGKILL test; the seed is printed and named in every failure so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared_store import Database
from tests.runner.conftest import Gateway, gateway  # noqa: F401  (the fixture, re-exported here)


def chaos_trials() -> int:
    return int(os.environ.get("CHAOS_TRIALS") or 20)


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    raw = os.environ.get("CHAOS_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    request.node.chaos_replay = f"CHAOS_SEED={seed} CHAOS_TRIALS={chaos_trials()}"
    print(f"chaos replay: {request.node.chaos_replay}")
    return seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    replay = getattr(item, "chaos_replay", None)
    if report.failed and replay:
        report.sections.append(("chaos replay", f"replay this failure with {replay}"))


def store_violations(db: Database) -> list[str]:
    """Dense ledgers (seq 1..ledger_len, no gap, no duplicate), at most one 'completed' record per
    idempotency key, and PRAGMA integrity_check ok. An empty list when the store is sound."""
    problems: list[str] = []
    rows = db.query(
        "SELECT r.run_id, r.ledger_len, COUNT(l.seq), COALESCE(MIN(l.seq), 0), COALESCE(MAX(l.seq), 0) "
        "FROM runs r LEFT JOIN ledger l ON l.run_id = r.run_id GROUP BY r.run_id"
    )
    for run_id, ledger_len, count, low, high in rows:
        if not (count == ledger_len == high and low == (1 if count else 0)):
            problems.append(
                f"run {run_id}: ledger not dense (ledger_len {ledger_len}, {count} rows, seq {low}..{high})"
            )
    orphans = db.query_one("SELECT COUNT(*) FROM ledger WHERE run_id NOT IN (SELECT run_id FROM runs)")
    if orphans and orphans[0]:
        problems.append(f"{orphans[0]} ledger records of no run")
    for run_id, key, count in db.query(
        "SELECT run_id, idempotency_key, COUNT(*) FROM ledger WHERE step_status = 'completed' "
        "AND idempotency_key IS NOT NULL GROUP BY run_id, idempotency_key HAVING COUNT(*) > 1"
    ):
        problems.append(f"run {run_id}: {count} 'completed' records for idempotency key {key}")
    integrity = [row[0] for row in db.query("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        problems.append(f"integrity_check: {integrity[:5]}")
    return problems


def log_events(path: Path) -> list[dict[str, Any]]:
    """A runner's JSON log lines; a SIGKILL may leave the last one cut short (skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def write_lock_free(db_path: Path) -> bool:
    """Whether no process holds the db's write lock right now (BEGIN IMMEDIATE succeeds at once)."""
    conn = sqlite3.connect(db_path, timeout=0.05, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
