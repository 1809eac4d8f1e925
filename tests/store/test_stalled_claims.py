"""Poison-run accounting in the store: a claim marked stalled and never released counts; a release or
ledger progress clears the count; one claim counts once."""

from __future__ import annotations

import time

from abstractruntime.core.models import RunState, StepRecord, StepStatus

from shared_store import LeaseHolder
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore


def _claim(db, owner: str):  # type: ignore[no-untyped-def]
    """Claim the run as `owner` with a 1 ms lease: it expires on the backend's clock (the database's
    on PostgreSQL) right away, as if the runner died; the next claim takes the run over."""
    holder = LeaseHolder(db, owner, lease_s=0.001)
    for _ in range(1_000):
        leases = holder.claim(1)
        if leases:
            break
        time.sleep(0.01)
    assert len(leases) == 1
    return holder, leases[0]


def test_stalled_claims_count_until_a_release_or_progress(db) -> None:
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id="poison-1")
    SqliteRunStore(db).save(run)
    stalled = []
    for attempt in range(3):  # each claim marked stalled (twice: counted once), then the runner dies
        holder, lease = _claim(db, f"r{attempt}")
        stalled.append(lease.stalled)
        holder.mark_stalled([lease.run_id])
        holder.mark_stalled([lease.run_id])
    holder, lease = _claim(db, "r3")
    assert [*stalled, lease.stalled] == [0, 1, 2, 3]

    # Progress (a ledger append under the lease) clears the count; so does a release.
    holder.mark_stalled([lease.run_id])
    SqliteLedgerStore(db, fence=holder).append(
        StepRecord(run_id="poison-1", step_id="s1", node_id="n", status=StepStatus.COMPLETED)
    )
    holder, lease = _claim(db, "r4")
    assert lease.stalled == 0
    holder.mark_stalled([lease.run_id])
    holder.release(lease.run_id)
    holder, lease = _claim(db, "r5")
    assert lease.stalled == 0
