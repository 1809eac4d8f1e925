"""A ledger page read as one joined value (the API's replay body) holds exactly the records of the
row-by-row page, in seq order, on both backends: also when seqs were written out of order and runs
interleave, as concurrent appenders leave them."""

from __future__ import annotations

import json

import pytest
from abstractruntime.core.models import RunState

from shared_store import queries as q
from shared_store.reads import joined_ledger_page, ledger_page
from shared_store.run_store import SqliteRunStore

RUNS = ["page-a", "page-b", "page-c"]
PER_RUN = 40


def _record(run_id: str, seq: int) -> bytes:
    return json.dumps({"run_id": run_id, "seq": seq, "text": "x" * (seq % 7) + ",é"}).encode()


@pytest.fixture
def ledger(db):
    store = SqliteRunStore(db)
    for run_id in RUNS:
        store.save(RunState.new(workflow_id="w", entry_node="start", run_id=run_id))
    # Seqs in a scrambled order, runs interleaved: the table's physical order is not seq order.
    order = sorted(((seq * 7919) % PER_RUN + 1, run_id) for seq in range(PER_RUN) for run_id in RUNS)
    order.sort(key=lambda pair: (pair[0] * 31) % 17)
    with db.write() as conn:
        for seq, run_id in order:
            conn.execute(
                "INSERT INTO ledger (run_id, seq, step_status, idempotency_key, record) VALUES (?, ?, ?, ?, ?)",
                (run_id, seq, "completed", f"{run_id}:{seq}", _record(run_id, seq)),
            )
    return db


@pytest.mark.parametrize(("after", "limit"), [(0, 1000), (0, 1), (5, 10), (39, 5), (40, 5), (0, PER_RUN)])
def test_joined_page_is_the_row_page(ledger, after: int, limit: int) -> None:
    for run_id in RUNS:
        page = ledger_page(ledger, run_id, after=after, limit=limit)
        records, next_after, count = joined_ledger_page(ledger, run_id, after=after, limit=limit)
        assert records == b",".join(page.records)
        assert (next_after, count) == (page.next_after, len(page.records))
        seqs = [item["seq"] for item in json.loads(b"[" + records + b"]")]
        assert seqs == list(range(after + 1, min(PER_RUN, after + limit) + 1))


def test_unknown_run_reads_empty(ledger) -> None:
    assert joined_ledger_page(ledger, "no-such-run", after=3) == (b"", 3, 0)
    with pytest.raises(ValueError):
        joined_ledger_page(ledger, RUNS[0], after=-1)


@pytest.mark.sqlite_only("SQLite's query plans (EXPLAIN QUERY PLAN)")
def test_joined_page_reads_the_key_range_and_sorts_nothing(db) -> None:
    plan = " / ".join(
        str(row[-1]) for row in db.query("EXPLAIN QUERY PLAN " + q.LEDGER_PAGE_JOINED, ("r", 0, 9))
    )
    assert "PRIMARY KEY (run_id=? AND seq>?)" in plan and "TEMP B-TREE" not in plan, plan
