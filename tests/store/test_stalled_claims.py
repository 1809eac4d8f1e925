"""Poison-run accounting in the store: a claim marked stalled and never released counts; a release or
ledger progress clears the count; one claim counts once."""

from __future__ import annotations

from abstractruntime.core.models import RunState, StepRecord, StepStatus

from shared_store import LeaseHolder, reclaim_expired
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore


def _claim(db, owner: str, clock: list[float]):  # type: ignore[no-untyped-def]
    holder = LeaseHolder(db, owner, lease_s=1.0, clock=lambda: clock[0])
    leases = holder.claim(1)
    assert len(leases) == 1
    return holder, leases[0]


def test_stalled_claims_count_until_a_release_or_progress(db) -> None:
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id="poison-1")
    SqliteRunStore(db).save(run)
    clock = [2_000_000_000.0]
    stalled = []
    for attempt in range(3):  # each claim marked stalled (twice: counted once), then the runner dies
        holder, lease = _claim(db, f"r{attempt}", clock)
        stalled.append(lease.stalled)
        holder.mark_stalled([lease.run_id])
        holder.mark_stalled([lease.run_id])
        clock[0] += 5
        reclaim_expired(db, now=clock[0])
    holder, lease = _claim(db, "r3", clock)
    assert [*stalled, lease.stalled] == [0, 1, 2, 3]

    # Progress (a ledger append under the lease) clears the count; so does a release.
    holder.mark_stalled([lease.run_id])
    SqliteLedgerStore(db, fence=holder).append(
        StepRecord(run_id="poison-1", step_id="s1", node_id="n", status=StepStatus.COMPLETED)
    )
    clock[0] += 5
    reclaim_expired(db, now=clock[0])
    holder, lease = _claim(db, "r4", clock)
    assert lease.stalled == 0
    holder.mark_stalled([lease.run_id])
    holder.release(lease.run_id)
    holder, lease = _claim(db, "r5", clock)
    assert lease.stalled == 0
