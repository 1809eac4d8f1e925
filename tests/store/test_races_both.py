"""Races through the store's named operations, on both backends (the `db` fixture): real threads on one
store, each with its own connection. SQLite serialises writers; PostgreSQL under READ COMMITTED does
not, so these are where a statement copied from SQLite goes wrong there (re-claims, a stale holder's
write after a takeover, a feed cursor skipping a late commit, duplicate starts). Everything asserted is a count or an identity, never a duration.

A takeover is made to overlap the stale holder's write with `db.group()`: the taker claims inside an
open transaction, the stale holder's write starts in another thread, and only then does the takeover
commit. On PostgreSQL the test also sees the stale writer waiting on the run row's lock (pg_locks)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from abstractruntime.core.models import RunState, StepRecord

from runner_service.schedules import fire_due, start_parent
from shared_store import ChangeFeed, LeaseHolder, LeaseLost
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.inbox import append_command, get_command, resolve_command
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.media_jobs import enqueue_media_job
from shared_store.run_store import SqliteRunStore
from shared_store.run_unit import RunUnit
from shared_store.schedules import ScheduleSpec, create_schedule, get_schedule
from shared_store.starts import IdempotencyConflict, enqueue_run
from tests.store.races import TIMEOUT_S, due_runs, take_over, together, until_blocked


# --- claims ---------------------------------------------------------------------------------------
def test_concurrent_claimers_never_hold_a_run_twice(db) -> None:
    ids = due_runs(db, 400)
    holders = [LeaseHolder(db, f"r{i}", lease_s=300) for i in range(4)]
    # Every claimer's first claim is made before any makes its second: a thread the scheduler ran
    # first could otherwise take all 400 runs before the others started (seen once in CI).
    first_claims = threading.Barrier(len(holders))

    def claim_all(holder: LeaseHolder) -> Callable[[], list[tuple[str, int]]]:
        def run() -> list[tuple[str, int]]:
            got: list[tuple[str, int]] = []
            empty = 0
            first = True
            while empty < 3:
                leases = holder.claim(3)
                if first:
                    first_claims.wait(TIMEOUT_S)
                    first = False
                empty = 0 if leases else empty + 1
                got.extend((lease.run_id, lease.epoch) for lease in leases)
            return got

        return run

    claims = together([claim_all(h) for h in holders])
    claimed = [run_id for per in claims for run_id, _ in per]
    assert sorted(claimed) == ids, "every run claimed exactly once"
    assert sum(h.claims for h in holders) == len(ids), "claims counted once each"
    assert all(epoch == 1 for per in claims for _, epoch in per), "no run re-claimed (epoch bumped)"
    owners = dict(db.query("SELECT run_id, lease_owner FROM runs"))
    for holder, per in zip(holders, claims, strict=True):
        assert all(owners[run_id] == holder.owner for run_id, _ in per)
        assert {lease.run_id for lease in holder.held()} == {run_id for run_id, _ in per}
    assert sum(1 for per in claims if per) >= 2, "the claimers really competed"


# --- the fence ------------------------------------------------------------------------------------
def test_a_takeover_during_an_append_leaves_the_stale_write_out(db) -> None:
    (run_id,) = due_runs(db, 1)
    a = LeaseHolder(db, "a", lease_s=0.001)
    assert [lease.epoch for lease in a.claim(1)] == [1]
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id=run_id)
    outcome: dict[str, Any] = {}
    about_to_append = threading.Event()

    def stale_append() -> None:
        about_to_append.set()
        try:
            SqliteLedgerStore(db, fence=a).append(StepRecord.start(run=run, node_id="A", effect=None))
            outcome["a"] = "written"
        except LeaseLost as exc:
            outcome["a"] = exc

    b = LeaseHolder(db, "b", lease_s=300)
    stale = threading.Thread(target=stale_append)
    with db.group():  # B's takeover: committed when this block ends
        assert take_over(b, run_id) == 2
        stale.start()
        assert about_to_append.wait(TIMEOUT_S)
        until_blocked(db, stale)
    stale.join(TIMEOUT_S)
    assert isinstance(outcome["a"], LeaseLost), outcome
    SqliteLedgerStore(db, fence=b).append(StepRecord.start(run=run, node_id="B", effect=None))
    assert [r["node_id"] for r in SqliteLedgerStore(db).list(run_id)] == ["B"]
    assert db.query_one(
        "SELECT ledger_len, lease_owner, lease_epoch FROM runs WHERE run_id = ?", (run_id,)
    ) == (
        1,
        "b",
        2,
    )
    assert a.lost_leases == 1 and a.held() == []


def test_a_takeover_during_a_unit_commit_leaves_the_whole_unit_out(db) -> None:
    """A runner's unit (records + its state save) racing a takeover: all of it or none of it."""
    (run_id,) = due_runs(db, 1)
    a = LeaseHolder(db, "a", lease_s=0.001)
    a.claim(1)
    unit = RunUnit(db, a)
    runs, ledger = SqliteRunStore(db, fence=a, unit=unit), SqliteLedgerStore(db, fence=a, unit=unit)
    run = runs.load(run_id)
    assert run is not None
    run.vars["writer"] = "A"
    for node in ("a1", "a2"):
        ledger.append(StepRecord.start(run=run, node_id=node, effect=None))
    runs.save(run)  # staged with the records
    outcome: dict[str, Any] = {}
    committing = threading.Event()

    def stale_commit() -> None:
        committing.set()
        try:
            unit.flush()
            outcome["a"] = "written"
        except LeaseLost as exc:
            outcome["a"] = exc

    b = LeaseHolder(db, "b", lease_s=300)
    stale = threading.Thread(target=stale_commit)
    with db.group():
        take_over(b, run_id)
        stale.start()
        assert committing.wait(TIMEOUT_S)
        until_blocked(db, stale)
    stale.join(TIMEOUT_S)
    assert isinstance(outcome["a"], LeaseLost), outcome
    assert SqliteLedgerStore(db).list(run_id) == []
    state = SqliteRunStore(db).load(run_id)
    assert state is not None and "writer" not in state.vars


def test_a_takeover_during_a_fenced_command_outcome_leaves_it_pending(db) -> None:
    """A fenced write whose guard is a sub-select (the command outcome) waits for the takeover too."""
    (run_id,) = due_runs(db, 1)
    append_command(db, command_id="c1", run_id=run_id, type="pause", payload={})
    command = get_command(db, "c1")
    assert command is not None
    a = LeaseHolder(db, "a", lease_s=0.001)
    a.claim(1)
    outcome: dict[str, Any] = {}
    resolving = threading.Event()

    def stale_outcome() -> None:
        resolving.set()
        outcome["a"] = resolve_command(db, command, status="applied", fence=a)

    b = LeaseHolder(db, "b", lease_s=300)
    stale = threading.Thread(target=stale_outcome)
    with db.group():
        take_over(b, run_id)
        stale.start()
        assert resolving.wait(TIMEOUT_S)
        until_blocked(db, stale)
    stale.join(TIMEOUT_S)
    assert outcome["a"] is False, "the stale holder's outcome was refused"
    assert get_command(db, "c1").status == "pending"
    assert resolve_command(db, command, status="applied", fence=b) is True


# --- the change feed ------------------------------------------------------------------------------
def _append(db, run_id: str, node: str = "n") -> None:
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id=run_id)
    SqliteLedgerStore(db).append(StepRecord.start(run=run, node_id=node, effect=None))


def _drain(feed: ChangeFeed, cursor: int, seen: dict[str, list[int]]) -> int:
    while True:
        entries, cursor = feed.poll(cursor, limit=7)
        for entry in entries:
            seen.setdefault(entry.run_id, []).append(entry.ledger_len)
        if not entries:
            return cursor


def test_the_feed_delivers_a_transaction_that_commits_late(db) -> None:
    """x's append starts first and commits last; y's commits in between (on SQLite y waits for x).
    A cursor past y must not have stepped over x."""
    due_runs(db, 2, prefix="f")
    feed = ChangeFeed(db)
    cursor = feed.head()
    seen: dict[str, list[int]] = {}
    other = threading.Thread(target=_append, args=(db, "f-0001"))
    with db.group():
        _append(db, "f-0000")  # open: not committed until the block ends
        other.start()
        other.join(2)  # PostgreSQL: y commits now; SQLite: y waits for the write lock
        cursor = _drain(feed, cursor, seen)
    other.join(TIMEOUT_S)
    cursor = _drain(feed, cursor, seen)
    assert seen.get("f-0000", [])[-1:] == [1], seen
    assert seen.get("f-0001", [])[-1:] == [1], seen
    feed.close()


def test_the_feed_misses_nothing_with_open_transactions_interleaved(db) -> None:
    ids = due_runs(db, 6, prefix="g")
    feed = ChangeFeed(db)
    cursor = feed.head()
    seen: dict[str, list[int]] = {}
    done = threading.Event()

    def writer(seed: int) -> Callable[[], int]:
        def run() -> int:
            rng = random.Random(seed)
            for i in range(25):
                run_id = rng.choice(ids)
                if rng.random() < 0.4:
                    # A transaction held open across other writers' commits; its two runs locked in
                    # one order (a deadlock here would be the test's own making).
                    first, second = sorted(rng.sample(ids, 2))
                    with db.group():
                        _append(db, first, f"w{seed}-{i}")
                        time.sleep(rng.random() * 0.01)
                        _append(db, second, f"w{seed}-{i}b")
                else:
                    _append(db, run_id, f"w{seed}-{i}")
            return 0

        return run

    def poller() -> int:
        nonlocal cursor
        while not done.is_set():
            cursor = _drain(feed, cursor, seen)
            feed.wait(0.005)
        return 0

    polling = threading.Thread(target=poller)
    polling.start()
    try:
        together([writer(s) for s in range(4)])
    finally:
        done.set()
        polling.join(TIMEOUT_S)
    cursor = _drain(feed, cursor, seen)
    final = dict(db.query("SELECT run_id, ledger_len FROM runs"))
    assert sum(final.values()) > 100
    for run_id in ids:
        lengths = seen.get(run_id, [])
        assert lengths == sorted(lengths), (run_id, lengths)
        assert lengths[-1:] == [final[run_id]], (run_id, lengths, final[run_id])
    feed.close()


# --- dense ledgers --------------------------------------------------------------------------------
def test_concurrent_appenders_keep_ledgers_dense(db) -> None:
    direct, in_units = due_runs(db, 2, prefix="d")
    holder = LeaseHolder(db, "r", lease_s=300)
    assert len(holder.claim(2)) == 2
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id=direct)

    def appender(i: int) -> Callable[[], int]:
        def run_appends() -> int:
            ledger = SqliteLedgerStore(db, fence=holder)
            for j in range(40):
                ledger.append(StepRecord.start(run=run, node_id=f"a{i}-{j}", effect=None))
            return 40

        return run_appends

    def unit_committer(i: int) -> Callable[[], int]:
        def commit_units() -> int:
            unit = RunUnit(db, holder)
            ledger = SqliteLedgerStore(db, fence=holder, unit=unit)
            other = RunState.new(workflow_id="w@1:f", entry_node="start", run_id=in_units)
            for j in range(10):
                for k in range(3):
                    ledger.append(StepRecord.start(run=other, node_id=f"u{i}-{j}-{k}", effect=None))
                unit.flush()
            return 30

        return commit_units

    written = together([appender(i) for i in range(4)] + [unit_committer(i) for i in range(3)])
    assert sum(written) == 160 + 90
    for run_id, n in ((direct, 160), (in_units, 90)):
        seqs = [row[0] for row in db.query("SELECT seq FROM ledger WHERE run_id = ? ORDER BY seq", (run_id,))]
        assert seqs == list(range(1, n + 1)), f"{run_id}: gaps or duplicates"
        assert db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (run_id,)) == (n,)
    # Each unit's three records are consecutive: a unit commits as one.
    nodes = [row[0] for row in SqliteLedgerStore(db).list(in_units) for row in [(row["node_id"],)]]
    for start in range(0, 90, 3):
        assert len({node.rsplit("-", 1)[0] for node in nodes[start : start + 3]}) == 1, nodes[
            start : start + 3
        ]


# --- schedules ------------------------------------------------------------------------------------
def _ctx(db, holder: LeaseHolder) -> SimpleNamespace:
    """What runner_service.schedules reads of a runner's command context."""
    unit = RunUnit(db, holder)
    return SimpleNamespace(
        db=db, fence=holder, unit=unit, run_store=SqliteRunStore(db, fence=holder, unit=unit)
    )


def test_a_schedule_fires_once_across_a_takeover(db, flows: Path) -> None:
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    parent = create_schedule(
        db, resolved=resolved, spec=ScheduleSpec.parse({"interval": "1h"}), input_data={"message": "tick"}
    )
    a = LeaseHolder(db, "a", lease_s=0.001)
    assert [lease.run_id for lease in a.claim(1)] == [parent]
    ctx_a = _ctx(db, a)
    start_parent(ctx_a, parent)  # type: ignore[arg-type]
    ctx_a.unit.flush()
    fire_at = get_schedule(db, parent).next_fire_at
    assert fire_at is not None and fire_at <= time.time()

    outcome: dict[str, Any] = {}
    staged = threading.Event()

    def stale_firing() -> None:
        stale = _ctx(db, a)
        outcome["fired"] = fire_due(stale, parent)  # type: ignore[arg-type]
        staged.set()  # A read the schedule before B's firing committed: it staged the same firing
        try:
            stale.unit.flush()
            outcome["a"] = "written"
        except LeaseLost as exc:
            outcome["a"] = exc

    b = LeaseHolder(db, "b", lease_s=300)
    thread = threading.Thread(target=stale_firing)
    with db.group():
        take_over(b, parent)
        ctx_b = _ctx(db, b)
        assert fire_due(ctx_b, parent) == 1  # type: ignore[arg-type]
        ctx_b.unit.flush()
        thread.start()
        assert staged.wait(TIMEOUT_S)
        until_blocked(db, thread)
    thread.join(TIMEOUT_S)
    assert outcome["fired"] == 1 and isinstance(outcome["a"], LeaseLost), outcome
    children = db.query("SELECT run_id FROM runs WHERE parent_run_id = ?", (parent,))
    assert len(children) == 1, children
    schedule = get_schedule(db, parent)
    assert schedule.fired_count == 1 and schedule.last_child_run_id == children[0][0]
    # B, still holding the parent, fires nothing more for the same firing.
    assert fire_due(_ctx(db, b), parent) == 0  # type: ignore[arg-type]


# --- idempotent starts and command ids --------------------------------------------------------------
def test_concurrent_duplicate_idempotency_keys_start_one_run(db, flows: Path) -> None:
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    for round_ in range(5):
        key = f"key-{round_}"

        def start(key: str = key) -> tuple[str, bool]:
            result = enqueue_run(db, resolved=resolved, input_data={"message": "hi"}, idempotency_key=key)
            return result.run_id, result.created

        results = together([start] * 6)
        assert len({run_id for run_id, _ in results}) == 1, results
        assert sum(created for _, created in results) == 1, results
        assert db.query_one("SELECT count(*) FROM run_start_keys WHERE idempotency_key = ?", (key,)) == (1,)
    assert db.query_one("SELECT count(*) FROM runs") == (5,)
    # The same key for a different request: a conflict, never a second run or a server error.
    with pytest.raises(IdempotencyConflict):
        enqueue_run(db, resolved=resolved, input_data={"message": "other"}, idempotency_key="key-0")
    assert db.query_one("SELECT count(*) FROM runs") == (5,)


def test_concurrent_duplicate_media_request_ids_start_one_job(db) -> None:
    (parent,) = due_runs(db, 1)
    for round_ in range(3):

        def start(round_: int = round_) -> tuple[str, bool]:
            result = enqueue_media_job(
                db, kind="tts", request={"text": "hi"}, parent_run_id=parent, request_id=f"req-{round_}"
            )
            return result.run_id, result.created

        results = together([start] * 6)
        assert len({run_id for run_id, _ in results}) == 1 and sum(c for _, c in results) == 1, results
    assert db.query_one("SELECT count(*) FROM runs WHERE parent_run_id = ?", (parent,)) == (3,)


def test_concurrent_duplicate_command_ids_append_one_command(db) -> None:
    (run_id,) = due_runs(db, 1)
    for round_ in range(5):
        command_id = f"cmd-{round_}"

        def send(command_id: str = command_id) -> tuple[bool, int]:
            result = append_command(db, command_id=command_id, run_id=run_id, type="pause", payload={})
            return result.accepted, result.seq

        results = together([send] * 6)
        assert sum(accepted for accepted, _ in results) == 1, results
        assert len({seq for _, seq in results}) == 1, "every duplicate answers the first one's seq"
    assert db.query_one("SELECT count(*) FROM commands") == (5,)
