"""The runner's unit of work stages state saves, and the creation of a run it starts: a later save
of a run supersedes an earlier one that left it `running` (each writes the whole row and document), a
save into `waiting` is kept whole, and nothing staged before a mark is touched (a refused command
rolls back to the mark)."""

from __future__ import annotations

from pathlib import Path

from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState

from shared_store import LeaseHolder
from shared_store import queries as q
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.run_store import SqliteRunStore
from shared_store.run_unit import RunUnit
from shared_store.starts import enqueue_run


def _queued_held_run(db, flows: Path) -> tuple[LeaseHolder, RunUnit, SqliteRunStore, RunState]:
    """A queued bench-echo run claimed by r1, its unit and store, and the state a start creates."""
    import_flows_dir(db, flows)
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    run_id = enqueue_run(db, resolved=resolved, input_data={}).run_id
    fence = LeaseHolder(db, "r1", lease_s=30.0)
    assert [lease.run_id for lease in fence.claim(1)] == [run_id]
    unit = RunUnit(db, fence)
    store = SqliteRunStore(db, fence=fence, unit=unit)
    return (
        fence,
        unit,
        store,
        RunState.new(workflow_id=resolved.workflow_id, entry_node="start", run_id=run_id),
    )


def _held_run(db, flows: Path) -> tuple[LeaseHolder, RunUnit, SqliteRunStore, RunState]:
    fence, unit, store, run = _queued_held_run(db, flows)
    created, fresh = store.create_if_absent(run)
    assert fresh
    return fence, unit, store, created


def _staged_saves(unit: RunUnit) -> list[str]:
    return [item.params["status"] for item in unit._staged if item.sql is q.SAVE_RUN_FENCED]


def test_a_save_supersedes_the_staged_one_that_left_the_run_running(db, flows: Path) -> None:
    _, unit, store, run = _held_run(db, flows)
    run.status = RunStatus.RUNNING
    run.current_node = "a"
    store.save(run)
    run.current_node = "b"
    store.save(run)
    assert _staged_saves(unit) == ["running"]
    run.status = RunStatus.COMPLETED
    run.output = {"done": True}
    store.save(run)
    assert _staged_saves(unit) == ["completed"]
    assert unit.release(run.run_id)
    status, node = db.query_one("SELECT status, current_node FROM runs WHERE run_id = ?", (run.run_id,))
    assert (status, node) == ("completed", "b")
    assert store.load(run.run_id).output == {"done": True}


def test_a_move_into_waiting_and_what_came_before_a_mark_stay_staged(db, flows: Path) -> None:
    _, unit, store, run = _held_run(db, flows)
    run.status = RunStatus.RUNNING
    store.save(run)
    mark = unit.mark()
    run.current_node = "c"
    store.save(run)  # the save before the mark stays: rolling back to the mark must find it
    assert _staged_saves(unit) == ["running", "running"]
    unit.rollback_to(mark)
    assert _staged_saves(unit) == ["running"]
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="k1", prompt="?")
    store.save(run)
    assert _staged_saves(unit) == ["running", "waiting"]  # (a save before the mark is never dropped)
    run.status = RunStatus.RUNNING
    run.waiting = None
    store.save(run)
    assert _staged_saves(unit) == ["running", "waiting", "running"]  # waiting is kept whole
    assert unit.release(run.run_id)
    assert db.query_one("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)) == ("running",)


def test_a_start_commits_its_creation_with_the_claims_release(db, flows: Path) -> None:
    """The runner read the run queued under its lease (`starting`): its creation is staged, read back
    from the unit, and commits with the release; a later save takes its place (the creation, with
    the later state: one row write and one document)."""
    _, unit, store, run = _queued_held_run(db, flows)
    store.starting.add(run.run_id)
    created, fresh = store.create_if_absent(run)
    assert fresh and created is run and store.starting == set()
    status = "SELECT status, current_node FROM runs WHERE run_id = ?"
    assert db.query_one(status, (run.run_id,)) == ("queued", None), "staged, not committed"
    loaded = store.load(run.run_id)
    assert loaded is not None and loaded.current_node == "start"  # read your writes
    run.status = RunStatus.COMPLETED
    run.current_node = "end"
    run.output = {"done": True}
    store.save(run)
    staged = [(item.sql, item.params["status"]) for item in unit._staged]
    assert staged == [(q.CREATE_RUN_FENCED, "completed"), (q.SAVE_RUN_STATE, "completed")]
    assert unit.release(run.run_id)
    assert db.query_one(status, (run.run_id,)) == ("completed", "end")
    assert db.query_one("SELECT workflow_id FROM runs WHERE run_id = ?", (run.run_id,)) == (run.workflow_id,)
    assert store.load(run.run_id).output == {"done": True}


def test_a_start_dropped_before_its_commit_leaves_the_run_queued(db, flows: Path) -> None:
    """A start whose processing ended in an error: the unit is discarded, the run is still queued
    (and claimable again once given back), nothing of it written."""
    fence, unit, store, run = _queued_held_run(db, flows)
    store.starting.add(run.run_id)
    store.create_if_absent(run)
    unit.discard()
    assert fence.release(run.run_id)
    row = "SELECT status, lease_owner FROM runs WHERE run_id = ?"
    assert db.query_one(row, (run.run_id,)) == ("queued", None)
    documents = "SELECT count(*) FROM run_states WHERE run_id = ? AND run_json IS NOT NULL"
    assert db.query_one(documents, (run.run_id,)) == (0,)
