"""The runner's unit of work: everything one step of a held run writes commits in ONE transaction.

A worker stages what a step produces — command outcomes, ledger records, child runs, schedule
advances, artifact rows, derived commands, and the state saves of the runs it holds — and the
next commit (a save that cannot be staged, a flush, the release) writes all of it in one
BEGIN IMMEDIATE transaction that checks the fence (lease owner + epoch) of
every run involved once, up front; a run taken over meanwhile raises LeaseLost and nothing of the
unit is written. Staged work that no save carries (a command that changed nothing, the records a
runtime appends after its last save) is committed by `flush()` as its own fenced unit.

No transaction is ever held open across a tick or an effect: staging is in memory, and a commit
is the few statements it holds. The worker flushes before an effect that may block (an LLM call,
a tool, a child run), so a step's STARTED record is committed — and seen by SSE readers — before
the effect runs.

`open()` is the one read a claimed run needs to decide what to do: status, start request, state,
flow-control row, whether it is scheduled, and its pending commands, in one read snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apsw
from abstractruntime.core.models import RunState

from . import queries as q
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import LeaseLost, StoreUnavailable, UnknownRun
from .inbox import Command, command_from_row
from .leases import LeaseHolder
from .postgres.retry import write_unit


@dataclass(frozen=True)
class Staged:
    run_id: str  # whose lease fences the statement
    sql: str
    params: dict[str, Any]


@dataclass(frozen=True)
class RunStep:
    """What a claimed run is due for, read in one snapshot (see RunUnit.open)."""

    run_id: str
    status: str
    start: dict[str, Any] | None  # the start request (queued runs, media jobs)
    state_json: bytes | None  # the RunState document (None while queued)
    flow: tuple[Any, ...]  # flow-control columns, as flow_control.admit reads them
    scheduled: bool
    commands: list[Command] = field(default_factory=list)  # pending, in seq order (no emit_event)

    def state(self) -> RunState | None:
        if self.state_json is None:
            return None
        from .run_store import decode_run

        return decode_run(self.state_json)


class _Refused(Exception):
    """The save carrying the unit was refused: roll the whole unit back."""


class RunUnit:
    """One worker's unit of work over the runs its runner holds (one per worker thread)."""

    def __init__(self, db: Database, fence: LeaseHolder) -> None:
        self.db = db
        self.fence = fence
        self._staged: list[Staged] = []
        self._commits = 0  # units committed: marks taken before a commit are spent by it
        # Staged items below this index are before a mark: never removed (rollback_to counts on them).
        self._floor = 0
        # When each run saved through the unit is next due, as of its last committed save: what a
        # release settles with, without reading the run's state back (the run store shares it).
        self.last_due: dict[str, dict[str, Any]] = {}

    # --- staging -------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self._staged)

    def stages(self, run_id: str) -> bool:
        """Whether the unit holds uncommitted work fenced by run_id."""
        return any(item.run_id == run_id for item in self._staged)

    def stage(self, run_id: str, sql: str, params: dict[str, Any]) -> None:
        """Add a statement to the unit, fenced by run_id's lease (owner and epoch supplied here)."""
        self._staged.append(Staged(run_id, sql, {**params, **self.fence.params(run_id)}))

    # Reads of what the unit stages see it (read your writes) without committing it early: an early
    # commit would split a command's outcome from the records it caused.
    def stage_record(self, run_id: str, params: dict[str, Any]) -> None:
        """A ledger record (APPEND_LEDGER_IN_UNIT's params)."""
        self.stage(run_id, q.APPEND_LEDGER_IN_UNIT, params)

    def staged_records(self, run_id: str) -> list[dict[str, Any]]:
        """The params of the run's ledger records staged, in append order."""
        return [
            item.params
            for item in self._staged
            if item.run_id == run_id and item.sql is q.APPEND_LEDGER_IN_UNIT
        ]

    def stage_save(self, run_id: str, params: dict[str, Any]) -> None:
        """A held run's state save (SAVE_RUN_FENCED then SAVE_RUN_STATE), committed by the next
        commit, flush or release: a short run (start, tick, complete) commits its step and its end
        with the release, one commit instead of three. Its fence is the unit's up-front check."""
        creates = self._drop_superseded_save(run_id, str(params["status"]))
        self.stage(run_id, q.CREATE_RUN_FENCED if creates else q.SAVE_RUN_FENCED, params)
        self.stage(run_id, q.SAVE_RUN_STATE, params)

    def stage_create(self, run_id: str, params: dict[str, Any]) -> None:
        """The creation of a held run read queued in this claim (CREATE_RUN_FENCED, SAVE_RUN_STATE):
        the lease it is read under keeps the row queued until this commits (only its holder starts
        it), and the commit's fence checks that lease. A later save takes its place: staged as the
        creation, with the later state (one row write and one document, not two of each: ~60 us of
        the runner's SQL a run on bench-echo)."""
        self.stage(run_id, q.CREATE_RUN_FENCED, params)
        self.stage(run_id, q.SAVE_RUN_STATE, params)

    def _drop_superseded_save(self, run_id: str, status: str) -> bool:
        """Unstage the run's previous staged save when this one supersedes it: each writes the whole
        row and document, and one that left the run `running` fired no trigger a later one would
        not (they act on a move into waiting or an end; a move into waiting is kept whole, as a
        webhook's run.waiting counts each). bench-echo staged two saves per claim: one upsert and
        one document write fewer a run (~55 us of the runner's SQL). True when what it unstaged was
        the run's creation (see stage_create)."""
        for index in range(len(self._staged) - 1, self._floor, -1):
            item = self._staged[index]
            if item.run_id != run_id or item.sql is not q.SAVE_RUN_STATE:
                continue
            before = self._staged[index - 1]
            if (
                before.sql is q.CREATE_RUN_FENCED
                and before.run_id == run_id
                and item.params["status"] == "running"
            ):
                # A staged creation into `running` (no trigger acts on it): True, this save creates
                # the run in its place (the same columns, identity included; the row still queued,
                # so the triggers see queued -> this save's status, as they would have seen running
                # -> this save's).
                del self._staged[index - 1 : index + 1]
                return True
            if (
                status != "waiting"
                and item.params["status"] == "running"
                and before.sql is q.SAVE_RUN_FENCED
                and before.run_id == run_id
            ):
                del self._staged[index - 1 : index + 1]
            return False
        return False

    def staged_save(self, run_id: str) -> dict[str, Any] | None:
        """The params of the run's last staged state save (read your writes), or None."""
        for item in reversed(self._staged):
            if item.run_id == run_id and item.sql is q.SAVE_RUN_STATE:
                return item.params
        return None

    def stage_artifact(self, fenced_by: str, params: dict[str, Any]) -> None:
        """An artifact row (STORE_ARTIFACT's params; its blob is already on disk)."""
        self.stage(fenced_by, q.STORE_ARTIFACT, params)

    def staged_artifact(self, artifact_id: str) -> dict[str, Any] | None:
        for item in reversed(self._staged):
            if item.sql is q.STORE_ARTIFACT and item.params["artifact_id"] == artifact_id:
                return item.params
        return None

    def mark(self) -> tuple[int, int]:
        self._floor = max(self._floor, len(self._staged))
        return self._commits, len(self._staged)

    def rollback_to(self, mark: tuple[int, int]) -> None:
        """Drop what was staged since mark (everything staged now, if a commit came in between)."""
        commits, size = mark
        if commits != self._commits:
            size = 0
        del self._staged[size:]
        self._floor = min(self._floor, len(self._staged))

    def discard(self) -> None:
        """Forget everything staged (the run was lost, or its processing ended in an error)."""
        self._staged.clear()
        self._floor = 0

    # --- named operations a runner stages ------------------------------------------------------
    def resolve_command(self, command: Command, status: str, error: str | None = None) -> None:
        """A command's outcome, committed with the state it produced (or on its own by flush)."""
        params = {"seq": command.seq, "status": status, "error": error, "applied_at": utc_now_iso()}
        self.stage(command.run_id, q.RESOLVE_COMMAND_UNLEASED, params)

    def cascade(self, command: Command) -> int:
        """Pass a pause / resume / cancel on to the run's unfinished children, as derived commands
        (`<command_id>><child_run_id>`) committed with the parent's unit; returns how many."""
        children = [row[0] for row in self.db.query(q.ACTIVE_CHILDREN, (command.run_id,))]
        now = time.time()
        for child in children:
            params = {
                "command_id": f"{command.command_id}>{child}",
                "run_id": child,
                "type": command.type,
                "payload": encode({**command.payload, "cascaded_from": command.run_id}),
                "ts": utc_now_iso(),
                "client_id": command.client_id,
                "request_id": command.request_id,
            }
            self.stage(command.run_id, q.INSERT_COMMAND, params)
            self.stage(command.run_id, q.WAKE_RUN, {"run_id": child, "now": now})
        return len(children)

    # --- committing ----------------------------------------------------------------------------
    def commit(
        self, save: Callable[[apsw.Connection], bool] | None = None, *, fenced_by: str | None = None
    ) -> bool:
        """Commit the staged statements, then `save` (a run state write), in one transaction.

        The fence of every run with staged work is checked once: first, by one read of its lease
        (LeaseLost and the unit is dropped; UnknownRun for a run that does not exist) — except
        `fenced_by`, the run whose lease the save's own statement checks (its guard). A save that
        writes nothing (False: refused by its guard, or a create that found the run) rolls the
        whole unit back; the staged statements stay. Returns what save returned."""
        staged = list(self._staged)
        fences: dict[str, dict[str, Any]] = {}
        for item in staged:
            if item.run_id != fenced_by:
                fences.setdefault(item.run_id, {"run_id": item.run_id, **self.fence.params(item.run_id)})

        def unit(conn: apsw.Connection) -> bool:
            # Fences in run_id order: two units locking the same runs' rows (PostgreSQL's FENCE_HELD
            # locks each) take them in one order and cannot deadlock on them.
            for run_id in sorted(fences):
                if conn.execute(q.FENCE_HELD, fences[run_id]).fetchone() is None:
                    exists = conn.execute(q.LEDGER_LEN, (run_id,)).fetchone() is not None
                    raise UnknownRun(run_id) if not exists else self.fence.lost(run_id)
            for item in staged:
                conn.execute(item.sql, item.params).fetchall()
            if save is not None and not save(conn):
                if staged:
                    raise _Refused
                return False
            return True

        try:
            # Run again whole when PostgreSQL aborts it for a deadlock (triggers lock child then
            # parent, cascades parent then child): the staged statements are all still here.
            written = write_unit(self.db, unit)
        except _Refused:
            return False
        except LeaseLost:
            self.discard()
            raise
        del self._staged[: len(staged)]
        self._floor = 0
        self._commits += 1
        for item in staged:
            if item.sql is q.SAVE_RUN_STATE:
                self.last_due[item.run_id] = {k: item.params[k] for k in ("due_at", "paused", "sub_run_id")}
        return written

    def release(self, run_id: str, *, settle: dict[str, Any] | None = None) -> bool:
        """Commit what is staged and give the run's lease back, in one transaction (one commit
        fewer per claim than a flush and a release: the records a runtime appends after its last
        save ride the release). False if the lease was no longer ours."""
        if not self._staged:
            return self.fence.release(run_id, settle=settle)
        epoch = self.fence.epoch(run_id)

        def give_back(conn: apsw.Connection) -> bool:
            return self.fence.release_in(conn, run_id, settle=settle, epoch=epoch)

        try:
            released = self.commit(give_back, fenced_by=run_id)
        except StoreUnavailable:
            if epoch is not None:  # the lease is forgotten already (release_in): send it again later
                self.fence.missed_release(run_id, epoch)
            raise
        if not released:  # the release's guard found it taken over
            self.discard()
            raise LeaseLost(run_id, self.fence.owner, epoch)
        return True

    def flush(self) -> None:
        """Commit what is staged as its own fenced unit (nothing to do: no transaction)."""
        if self._staged:
            self.commit()

    # --- the one read of a claimed run ---------------------------------------------------------
    def open(self, run_id: str, *, commands: int = 100) -> RunStep | None:
        """What the run is due for; None when the run does not exist. One statement, and a second
        for the pending commands only when the first saw some. A staged state save is committed
        first: the read must see it."""
        if self.stages(run_id):
            self.flush()
        row = self.db.query_one(q.OPEN_RUN, (run_id,))
        if row is None:
            return None
        pending = self.db.query(q.PENDING_RUN_COMMANDS, (run_id, commands)) if row[4] else []
        status, start_json, state_json, scheduled = row[0], row[1], row[2], bool(row[3])
        return RunStep(
            run_id=run_id,
            status=str(status),
            start=decode(start_json) if start_json is not None else None,
            state_json=bytes(state_json) if state_json is not None else None,
            flow=tuple(row[5:]),
            scheduled=scheduled,
            commands=[command_from_row(command) for command in pending],
        )

    def cancel_pending(self, run_id: str) -> bool:
        """Whether a cancel command waits for the run (the sandbox asks while a code node runs)."""
        return bool((self.db.query_one(q.CANCEL_PENDING, (run_id,)) or (0,))[0])
