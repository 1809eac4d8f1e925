"""The runner's unit of work (shared_store/run_unit.py), with kill points made deterministic.

A `_Killed` raised at one instruction stands for SIGKILL there: nothing after it runs and nothing
uncommitted survives (the open transaction is rolled back, as SQLite does for a dead process). The
doomed worker runs in this process; the takeover is a real runner process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import apsw
import pytest
from abstractruntime.core.models import EffectType
from abstractruntime.core.runtime import EffectOutcome, Runtime

from runner_service.worker import Worker, WorkerSettings
from shared_store import LeaseHolder
from shared_store.inbox import append_command
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from shared_store.run_unit import RunUnit
from tests.runner.conftest import Gateway


class _Killed(BaseException):
    """Stands for SIGKILL at one instruction."""


def _worker(gateway: Gateway, owner: str, **kwargs: Any) -> tuple[LeaseHolder, Worker]:
    fence = LeaseHolder(gateway.db, owner, lease_s=30.0)
    settings = WorkerSettings(artifacts_dir=gateway.tmp_path / "artifacts")
    return fence, Worker(gateway.db, fence, settings, stopping=threading.Event(), **kwargs)


def _failed_records(gateway: Gateway, run_id: str) -> list[dict[str, Any]]:
    return [r for _, r in gateway.ledger(run_id) if r.get("status") == "failed"]


@pytest.mark.parametrize("kill_at", ["before_the_record", "at_the_save"])
def test_a_kill_in_the_failure_path_never_leaves_a_failed_run_without_its_record(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, kill_at: str
) -> None:
    """A tick that raises fails the run: the FAILED state and the failure record used to be two
    transactions (save, then append), and a kill between them left a failed run whose ledger never
    said why. Now the record is staged and commits with the save: killed before the record or at the
    save, the run is not failed and no record exists; the takeover runner finishes it."""
    run_id = gateway.start("bench-echo", {"message": "hi"})

    def tick_raises(self: Runtime, **kwargs: Any) -> Any:
        raise RuntimeError("the tick broke")

    append_failure = SqliteLedgerStore.append_failure  # the gateway's failure records go through it
    write = SqliteRunStore._write

    def dies_before_the_record(self: SqliteLedgerStore, record: Any) -> None:
        if record.status.value == "failed":
            raise _Killed
        append_failure(self, record)

    def dies_at_the_save(self: SqliteRunStore, run: Any, sql: str, **options: Any) -> bool:
        if run.status.value == "failed":
            raise _Killed
        return write(self, run, sql, **options)

    fence, doomed = _worker(gateway, "doomed")
    assert fence.claim(1)
    monkeypatch.setattr(Runtime, "tick", tick_raises)
    if kill_at == "before_the_record":
        monkeypatch.setattr(SqliteLedgerStore, "append_failure", dies_before_the_record)
    else:
        monkeypatch.setattr(SqliteRunStore, "_write", dies_at_the_save)
    with pytest.raises(_Killed):
        doomed.process(run_id)
    monkeypatch.undo()

    killed = gateway.run(run_id)
    assert killed["status"] != "failed" or _failed_records(gateway, run_id), (
        "a failed run without its failure record"
    )
    # (Still queued: a start commits with its first tick's outcome, which never committed.)
    assert killed["status"] == "queued" and _failed_records(gateway, run_id) == []
    gateway.runner("after", lease_s=1.0)
    assert gateway.wait_status(run_id, "completed")["output"]["result"] == "hi"
    assert _failed_records(gateway, run_id) == []


def test_a_run_that_cannot_start_is_failed_with_its_record_in_one_commit(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued run whose workflow is gone fails unstarted: its creation (failed) and its failure
    record commit together. Killed before the record, it is still queued, not failed without why."""
    run_id = gateway.start("bench-echo", {"message": "x"})
    gateway.db.execute_write("DELETE FROM bundles WHERE bundle_id = 'bench-echo'")

    def dies_before_the_record(self: SqliteLedgerStore, record: Any) -> None:
        raise _Killed

    fence, doomed = _worker(gateway, "doomed")
    assert fence.claim(1)
    monkeypatch.setattr(SqliteLedgerStore, "append_failure", dies_before_the_record)
    with pytest.raises(_Killed):
        doomed.process(run_id)
    monkeypatch.undo()
    assert gateway.run(run_id)["status"] == "queued" and _failed_records(gateway, run_id) == []
    fence, worker = _worker(gateway, "after")
    # The doomed worker's lease ends (as its expiry would).
    gateway.db.execute_write(
        "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE run_id = ?", (run_id,)
    )
    assert fence.claim(1)
    worker.process(run_id)
    run = gateway.run(run_id)
    assert run["status"] == "failed" and "Bundle 'bench-echo@1.0.0' not found" in run["error"]
    assert len(_failed_records(gateway, run_id)) == 1


def test_a_failed_run_has_its_failure_record_in_the_same_commit(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side: a failure that does commit carries its record (and the step's records)."""
    run_id = gateway.start("bench-echo", {"message": "hi"})
    monkeypatch.setattr(Runtime, "tick", lambda self, **kwargs: (_ for _ in ()).throw(RuntimeError("broke")))
    fence, worker = _worker(gateway, "w")
    assert fence.claim(1)
    worker.process(run_id)
    run = gateway.run(run_id)
    assert run["status"] == "failed" and "tick raised RuntimeError: broke" in run["error"]
    (record,) = _failed_records(gateway, run_id)
    assert record["error"] == run["error"]
    assert run["ledger_len"] == len(gateway.ledger(run_id))


def test_a_kill_inside_the_unit_commits_none_of_it_and_the_command_applies_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement of a command's unit has run (outcome, resume record, the resumed state,
    the run row) when the runner dies before COMMIT: none of it is visible; the runner that takes
    the run over applies the command exactly once."""
    run_id = gateway.start("bench-ask")
    fence, first = _worker(gateway, "first")
    assert fence.claim(1)
    first.process(run_id)
    before = gateway.run(run_id)
    assert before["wait_reason"] == "user"
    ledger_before = gateway.ledger(run_id)
    append_command(
        gateway.db, command_id="answer", run_id=run_id, type="resume", payload={"payload": {"response": "go"}}
    )

    commit = RunUnit.commit
    ran: list[int] = []

    def dies_before_commit(
        self: RunUnit, save: Callable[[apsw.Connection], bool] | None = None, **kwargs: Any
    ) -> bool:
        if not self.pending:
            return commit(self, save, **kwargs)

        # The resumed state is staged with the rest (a held run's save rides the unit's commit).
        def save_then_die(conn: apsw.Connection) -> bool:
            assert save is None or save(conn)
            ran.append(conn.execute("SELECT count(*) FROM ledger WHERE run_id = ?", (run_id,)).fetchone()[0])
            raise _Killed

        return commit(self, save_then_die, **kwargs)

    fence, doomed = _worker(gateway, "doomed")
    assert fence.claim(1)
    monkeypatch.setattr(RunUnit, "commit", dies_before_commit)
    with pytest.raises(_Killed):
        doomed.process(run_id)
    monkeypatch.undo()
    assert ran and ran[0] > len(ledger_before), "the unit's records were written inside its transaction"
    assert gateway.command("answer")[0] == "pending"
    assert gateway.ledger(run_id) == ledger_before
    after_kill = gateway.run(run_id)
    assert (after_kill["status"], after_kill["wait_reason"], after_kill["ledger_len"]) == (
        "waiting",
        "user",
        before["ledger_len"],
    )

    gateway.runner("after", lease_s=1.0)
    assert gateway.wait_status(run_id, "completed")["output"]["response"] == "go"
    assert gateway.command("answer")[0] == "applied"
    resumes = [r for _, r in gateway.ledger(run_id) if (r.get("effect") or {}).get("type") == "resume"]
    assert len(resumes) == 1, f"the wait was answered {len(resumes)} times in the ledger"


def test_a_fenced_out_unit_writes_nothing(gateway: Gateway) -> None:
    """A unit whose run was taken over (epoch bumped) raises LeaseLost at its one fence check and
    writes none of its statements."""
    from shared_store import LeaseLost

    run_id = gateway.start("bench-ask")
    fence, first = _worker(gateway, "first")
    assert fence.claim(1)
    first.process(run_id)
    before = gateway.ledger(run_id)
    fence, stale = _worker(gateway, "stale")
    gateway.db.execute_write(
        "UPDATE runs SET lease_owner = 'stale', lease_epoch = lease_epoch + 1 WHERE run_id = ?", (run_id,)
    )
    fence.adopt(
        run_id, int(gateway.db.query_one("SELECT lease_epoch FROM runs WHERE run_id = ?", (run_id,))[0])
    )
    ctx = stale.context()
    ledger = ctx.runtime.ledger_store
    run = ctx.run_store.load(run_id)
    assert run is not None
    from abstractruntime.core.models import StepRecord

    ledger.append(StepRecord.start(run=run, node_id="x", effect=None))
    gateway.db.execute_write(
        "UPDATE runs SET lease_owner = 'thief', lease_epoch = lease_epoch + 1 WHERE run_id = ?", (run_id,)
    )
    with pytest.raises(LeaseLost):
        ctx.run_store.save(run)  # staged: the unit's commit checks the fence
        ctx.unit.flush()
    assert gateway.ledger(run_id) == before
    assert not ctx.unit.pending


def test_a_step_started_record_is_committed_before_a_blocking_effect_runs(gateway: Gateway) -> None:
    """SSE readers see a step start while its effect runs: the STARTED record of an llm_call is
    committed before the handler is called (the unit is flushed before any effect that may block)."""
    seen: list[list[str]] = []

    def llm_call(run: Any, effect: Any, default_next_node: str | None) -> EffectOutcome:
        committed = gateway.ledger(run.run_id)  # what any other connection can read now
        seen.append([f"{r.get('status')}:{(r.get('effect') or {}).get('type')}" for _, r in committed])
        return EffectOutcome.completed({"content": "ok", "response": "ok"})

    run_id = gateway.start("demo-llm", {"prompt": "hi"})
    fence, worker = _worker(gateway, "w", effect_handlers=lambda artifacts: {EffectType.LLM_CALL: llm_call})
    assert fence.claim(1)
    worker.process(run_id)
    assert seen and seen[0][-1] == "started:llm_call", seen
    assert gateway.run(run_id)["status"] == "completed"
    statuses = [r.get("status") for _, r in gateway.ledger(run_id)]
    assert statuses.count("started") >= 1 and "completed" in statuses
