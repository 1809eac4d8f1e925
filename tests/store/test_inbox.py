"""The command inbox: idempotent by command_id, global seq, outcomes, wake-up of the target run."""

from __future__ import annotations

import time

import pytest
from abstractruntime.core.models import RunState, WaitReason, WaitState
from abstractruntime.storage.commands import CommandRecord

from shared_store import LeaseHolder
from shared_store.command_store import SqliteCommandStore
from shared_store.inbox import append_command, get_command, pending_commands, resolve_command
from shared_store.run_store import SqliteRunStore


def _waiting_run(db, run_id: str = "r1") -> str:
    run = RunState.new(workflow_id="w@1:f", entry_node="ask", run_id=run_id)
    run.status = run.status.WAITING
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="user:ask")
    SqliteRunStore(db).save(run)
    return run_id


def test_append_is_idempotent_and_seq_is_global(db) -> None:
    first = append_command(db, command_id="c1", run_id="r1", type="pause", payload={})
    second = append_command(db, command_id="c2", run_id="r2", type="cancel", payload={"reason": "x"})
    again = append_command(db, command_id="c1", run_id="r9", type="cancel", payload={"other": 1})
    assert (first.accepted, first.duplicate) == (True, False)
    assert second.seq == first.seq + 1
    assert (again.accepted, again.duplicate, again.seq) == (False, True, first.seq)
    stored = get_command(db, "c1")
    assert (stored.run_id, stored.type, stored.payload, stored.status) == ("r1", "pause", {}, "pending")
    assert db.query_one("SELECT count(*) FROM commands") == (2,)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("command_id", "", "command_id"),
        ("run_id", "", "run_id"),
        ("type", "", "type"),
        ("payload", ["not", "a", "dict"], "payload must be a JSON object"),
        ("payload", {"x": object()}, "payload is not JSON"),
    ],
)
def test_bad_commands_change_nothing(db, field: str, value: object, message: str) -> None:
    args = {"command_id": "c", "run_id": "r", "type": "pause", "payload": {}}
    args[field] = value
    with pytest.raises(ValueError, match=message):
        append_command(db, **args)
    assert db.query_one("SELECT count(*) FROM commands") == (0,)


def test_a_command_makes_its_run_due_until_resolved(db) -> None:
    run_id = _waiting_run(db)
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,)) == (None,)
    append_command(db, command_id="c1", run_id=run_id, type="resume", payload={"payload": {"response": "y"}})
    due = db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,))[0]
    assert due is not None and due <= time.time()
    holder = LeaseHolder(db, "runner")
    assert [lease.run_id for lease in holder.claim(5)] == [run_id]
    # A save while the command is still pending keeps the run due (the command is not lost).
    store = SqliteRunStore(db, fence=holder)
    store.save(store.load(run_id))
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,))[0] is not None
    (command,) = pending_commands(db, run_id)
    assert resolve_command(db, command, status="applied", fence=holder) is True
    assert resolve_command(db, command, status="rejected", fence=holder) is False, "outcomes are final"
    store.save(store.load(run_id))
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,)) == (None,)
    assert get_command(db, "c1").status == "applied"


def test_only_the_lease_holder_resolves_a_command(db) -> None:
    run_id = _waiting_run(db)
    append_command(db, command_id="c1", run_id=run_id, type="pause", payload={})
    (command,) = pending_commands(db, run_id)
    assert resolve_command(db, command, status="applied", fence=LeaseHolder(db, "not-holding")) is False
    assert get_command(db, "c1").status == "pending"
    with pytest.raises(ValueError, match="'applied' or 'rejected'"):
        resolve_command(db, command, status="done")


def test_command_store_protocol(db) -> None:
    store = SqliteCommandStore(db)
    result = store.append(CommandRecord(command_id="a", run_id="r", type="pause", payload={}, ts=""))
    store.append(CommandRecord(command_id="b", run_id="r", type="resume", payload={}, ts="t", client_id="ui"))
    assert result.accepted and store.get_last_seq() == result.seq + 1
    records, cursor = store.list_after(after=0)
    assert [r.command_id for r in records] == ["a", "b"] and cursor == records[-1].seq
    assert records[1].client_id == "ui" and records[0].ts
    assert store.list_after(after=cursor) == ([], cursor)
