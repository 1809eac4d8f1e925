"""Run leases with real processes: exclusive claims, expiry and reclaim, fencing of a stale owner."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from abstractruntime.core.models import RunState, RunStatus, StepRecord

from shared_store import LeaseHolder, LeaseLost, reclaim_expired
from shared_store.leases import lease_of
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from tests.conftest import REPO


def _due_runs(db, n: int) -> list[str]:
    store = SqliteRunStore(db)
    ids = []
    for i in range(n):
        run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id=f"run-{i:04d}")
        store.save(run)  # RUNNING: due now
        ids.append(run.run_id)
    return ids


def _target(db, db_path: Path) -> str:
    """What another process opens: the PostgreSQL URL, or the SQLite file."""
    return str(getattr(db, "url", db_path))


def _worker(target: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.lease_worker", *args, "--db", target],
        cwd=REPO,
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_three_processes_never_claim_a_run_twice(db, db_path: Path) -> None:
    ids = _due_runs(db, 1200)
    workers = [
        _worker(_target(db, db_path), "claim-all", "--owner", f"r{i}", "--batch", "2", stdin=subprocess.PIPE)
        for i in range(3)
    ]
    assert all(w.stdout.readline() == "ready\n" for w in workers)
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    claims = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    claimed = [run_id for per_worker in claims for run_id, _ in per_worker]
    assert sorted(claimed) == ids, "every run claimed exactly once"
    assert all(epoch == 1 for per_worker in claims for _, epoch in per_worker)
    assert sum(1 for per_worker in claims if per_worker) >= 2, "the processes really competed"
    owners = dict(db.query("SELECT run_id, lease_owner FROM runs"))
    for i, per_worker in enumerate(claims):
        assert all(owners[run_id] == f"r{i}" for run_id, _ in per_worker)


def test_claim_takes_leased_rows_out_of_the_claimable_set(db) -> None:
    _due_runs(db, 10)
    a = LeaseHolder(db, "a")
    first = a.claim(4)
    assert len(first) == 4
    second = LeaseHolder(db, "b").claim(100)
    assert len(second) == 6 and not {x.run_id for x in first} & {x.run_id for x in second}
    assert db.query_one("SELECT count(*) FROM runs WHERE lease_owner IS NULL AND due_at IS NOT NULL") == (0,)
    assert LeaseHolder(db, "c").claim(5) == []


@pytest.mark.sqlite_only("counts SQLite's statement compilations (its authorizer runs at each one)")
def test_a_claim_compiles_its_statements_once(db) -> None:
    """SQLite 3.47+ plans with a bound LIMIT's value, so a claim binding :n to its LIMIT expired its
    prepared statement at every claim and compiled the UPDATE (indexes, triggers) anew: ~25% of a
    claim's CPU. The LIMIT is written into the statement instead (leases.claim_statement)."""
    _due_runs(db, 40)
    holder = LeaseHolder(db, "a")
    compiled: list[int] = []

    def authorizer(action: int, *_args: object) -> int:
        compiled.append(action)
        return apsw.SQLITE_OK

    db.connection().authorizer = authorizer  # (expires every prepared statement)
    assert len(holder.claim(4)) == 4 and compiled, "the first claim compiles its statements"
    compiled.clear()
    for _ in range(5):
        assert len(holder.claim(4)) == 4
    assert compiled == [], "a claim compiled a statement again"
    assert len(holder.claim(3)) == 3 and compiled, "a new batch size is a new statement (the check works)"


@pytest.mark.sqlite_only(
    "moves a fake clock through a live lease, its renewal and its expiry; PostgreSQL takes lease times "
    "from the database clock (gw_epoch()), which a host's clock cannot move (test_an_expired_lease_is_"
    "taken_over_with_a_new_epoch covers the takeover on both)"
)
def test_expired_lease_is_reclaimed_with_a_new_epoch(db) -> None:
    (run_id,) = _due_runs(db, 1)
    now = [time.time()]
    a = LeaseHolder(db, "a", lease_s=10, clock=lambda: now[0])
    b = LeaseHolder(db, "b", lease_s=10, clock=lambda: now[0])
    assert [x.epoch for x in a.claim(1)] == [1]
    now[0] += 5
    assert b.claim(1) == [], "a live lease is not claimable"
    assert a.heartbeat() == [], "renewal while held"
    now[0] += 9  # 14 s after the claim, 9 s after the renewal: still held
    assert b.claim(1) == []
    now[0] += 2  # past the renewed expiry
    taken = b.claim(1)
    assert [(x.run_id, x.epoch) for x in taken] == [(run_id, 2)]
    assert lease_of(db, run_id)[:2] == ("b", 2)
    assert [x.run_id for x in a.heartbeat()] == [run_id], "a learns it lost the lease"
    assert a.held() == []


def test_release_makes_a_due_run_claimable_again(db) -> None:
    (run_id,) = _due_runs(db, 1)
    a = LeaseHolder(db, "a")
    a.claim(1)
    assert a.release(run_id) is True
    assert a.release(run_id) is False
    assert [(x.run_id, x.epoch) for x in LeaseHolder(db, "b").claim(1)] == [(run_id, 2)]


def test_an_expired_lease_is_taken_over_with_a_new_epoch(db) -> None:
    """On the clock the backend uses (the database's on PostgreSQL): a lease of 1 ms expires at once."""
    (run_id,) = _due_runs(db, 1)
    a = LeaseHolder(db, "a", lease_s=0.001)
    assert [x.epoch for x in a.claim(1)] == [1]
    b = LeaseHolder(db, "b", lease_s=30)
    taken: list = []
    for _ in range(1_000):
        taken = b.claim(1)
        if taken:
            break
        time.sleep(0.01)
    assert [(x.run_id, x.epoch) for x in taken] == [(run_id, 2)]
    assert b.takeovers == 1
    assert lease_of(db, run_id)[:2] == ("b", 2)
    assert [x.run_id for x in a.heartbeat()] == [run_id], "a learns it lost the lease"
    assert a.held() == [] and b.heartbeat() == []


def test_reclaim_expired_frees_only_expired_leases(db) -> None:
    _due_runs(db, 3)
    # (In this order: a claim first frees expired leases, so "live" claiming second would free them.)
    LeaseHolder(db, "live", lease_s=3600).claim(1)
    assert len(LeaseHolder(db, "old", lease_s=0.001).claim(2)) == 2
    # The two short leases expire on the backend's clock (the database's on PostgreSQL) within ms.
    freed = 0
    for _ in range(1_000):
        freed += reclaim_expired(db)
        if freed >= 2:
            break
        time.sleep(0.01)
    assert freed == 2
    assert reclaim_expired(db) == 0
    assert db.query_one("SELECT count(*) FROM runs WHERE lease_owner IS NULL") == (2,)
    assert db.query_one("SELECT lease_owner FROM runs WHERE lease_owner IS NOT NULL") == ("live",)


def test_stale_owner_writes_are_rejected_and_invisible(db, db_path: Path) -> None:
    """Process A claims and stalls; its lease expires; B takes over and writes; A wakes and writes."""
    (run_id,) = _due_runs(db, 1)
    target = _target(db, db_path)
    a = _worker(target, "hold", "--owner", "A", "--lease-s", "1", stdin=subprocess.PIPE)
    assert json.loads(a.stdout.readline()) == {"claimed": [[run_id, 1]]}
    # B's clock runs 60 s ahead: for B, A's 1 s lease has long expired (on SQLite, where lease times
    # are the hosts'; on PostgreSQL they are the database's, and B claims until A's lease ran out).
    b = _worker(target, "takeover", "--owner", "B", "--clock-offset", "60")
    out_b = b.communicate(timeout=60)[0].splitlines()
    assert json.loads(out_b[0]) == {"claimed": [[run_id, 2]]}
    assert json.loads(out_b[1]) == {"save": "ok", "append": "ok"}
    out_a = a.communicate("go\n", timeout=60)[0].splitlines()
    outcome_a = json.loads(out_a[0])
    assert outcome_a["save"].startswith("LeaseLost") and outcome_a["append"].startswith("LeaseLost")
    assert "'A' at epoch 1" in outcome_a["save"]

    run = SqliteRunStore(db).load(run_id)
    assert run.vars["writer"] == "B", "A's save is not visible"
    records = SqliteLedgerStore(db).list(run_id)
    assert [r["node_id"] for r in records] == ["B"], "A's append is not visible"
    assert db.query_one(
        "SELECT ledger_len, lease_owner, lease_epoch FROM runs WHERE run_id = ?", (run_id,)
    ) == (
        1,
        "B",
        2,
    )


def test_writes_without_the_lease_are_refused_in_process(db) -> None:
    (run_id,) = _due_runs(db, 1)
    holder = LeaseHolder(db, "a")
    runs, ledger = SqliteRunStore(db, fence=holder), SqliteLedgerStore(db, fence=holder)
    run = SqliteRunStore(db).load(run_id)
    with pytest.raises(LeaseLost):
        runs.save(run)  # never claimed
    holder.claim(1)
    run.status = RunStatus.COMPLETED
    runs.save(run)
    ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    # Unleased writers (tools, other processes without a lease) cannot touch a leased run.
    with pytest.raises(LeaseLost, match="unleased writer"):
        SqliteRunStore(db).save(run)
    with pytest.raises(LeaseLost):
        SqliteLedgerStore(db).append(StepRecord.start(run=run, node_id="n", effect=None))
    assert db.query_one("SELECT status, ledger_len FROM runs WHERE run_id = ?", (run_id,)) == ("completed", 1)


def test_runs_created_by_a_runner_are_born_leased_to_it(db) -> None:
    holder = LeaseHolder(db, "a", lease_s=30)
    child = RunState.new(workflow_id="w@1:f", entry_node="start", run_id="child-1")
    SqliteRunStore(db, fence=holder).save(child)
    assert holder.epoch("child-1") == 1
    assert lease_of(db, "child-1")[:2] == ("a", 1)
    assert LeaseHolder(db, "b").claim(10) == []
    holder.release("child-1")
    assert [x.epoch for x in LeaseHolder(db, "b").claim(10)] == [2]


def test_a_lease_released_while_a_heartbeat_renews_is_not_reported_lost(db) -> None:
    """The heartbeat snapshots the held leases, then renews them under the write lock: a worker
    releasing one in between (a 1 ms run) is a release, not a lost lease (the 2-runner bench
    failed on exactly this `lease_lost`). A lease really taken over is still reported."""
    released, taken, kept = _due_runs(db, 3)
    fence = LeaseHolder(db, "r1", lease_s=30.0)
    assert {lease.run_id for lease in fence.claim(3)} == {released, taken, kept}
    snapshot = fence.held()  # what the heartbeat read before the worker released one
    assert fence.release(released)
    db.execute_write(
        "UPDATE runs SET lease_owner = 'r2', lease_epoch = lease_epoch + 1 WHERE run_id = ?", (taken,)
    )
    fence.held = lambda: snapshot  # type: ignore[method-assign]
    lost = fence.heartbeat()
    assert [lease.run_id for lease in lost] == [taken]
    assert fence.lost_leases == 1
    assert fence.epoch(kept) is not None and fence.epoch(taken) is None
