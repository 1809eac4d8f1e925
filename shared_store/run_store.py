"""abstractruntime's RunStore (and its queryable extensions) on the runs table.

Bound to a LeaseHolder, every save checks the runner's lease in the same statement; a run the
runner creates (a child run, a started queue entry) is born leased to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import apsw
import msgspec
from abstractruntime.core.models import RunState, RunStatus, WaitReason
from abstractruntime.core.run_attribution import automation_index_fields
from abstractruntime.core.run_identity import verify_run_identity
from abstractruntime.core.vars import is_paused_vars
from abstractruntime.storage.base import RunStore

from . import queries as q
from .codec import decode, encode
from .db import Database
from .errors import LeaseLost
from .leases import LeaseHolder
from .limits import check_output
from .postgres.retry import write_unit
from .run_unit import RunUnit

_run_decoder = msgspec.json.Decoder(RunState)
_DEADLINE_WAITS = (WaitReason.UNTIL, WaitReason.EVENT)


def decode_run(data: bytes) -> RunState:
    """RunState from stored JSON; tolerant of a value outside a field's declared type."""
    try:
        return _run_decoder.decode(data)
    except msgspec.ValidationError:
        return msgspec.convert(decode(data), RunState, strict=False)


def iso_to_epoch(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def due_at(run: RunState, paused: bool, now: float) -> float | None:
    """When a runner should next look at the run, judged from its state alone."""
    if paused:
        return None
    if run.status == RunStatus.RUNNING:
        return now
    waiting = run.waiting
    if (
        run.status == RunStatus.WAITING
        and waiting is not None
        and waiting.until
        and waiting.reason in _DEADLINE_WAITS
    ):
        # An unparseable deadline is looked at now: the runtime decides what it means.
        return iso_to_epoch(waiting.until) or now
    return None


def output_failed(run: RunState) -> bool:
    """COMPLETED with output.success == false: a failing code node ends this way; clients see failed."""
    output = run.output
    return run.status == RunStatus.COMPLETED and isinstance(output, dict) and output.get("success") is False


def awaited_child(run: RunState) -> str | None:
    """The child run a WAITING(SUBWORKFLOW) run waits on."""
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or waiting.reason != WaitReason.SUBWORKFLOW:
        return None
    details = waiting.details if isinstance(waiting.details, dict) else {}
    child = details.get("sub_run_id")
    if isinstance(child, str) and child:
        return child
    key = waiting.wait_key or ""
    return key.removeprefix("subworkflow:") if key.startswith("subworkflow:") else None


def check_outputs(run: RunState, cap: int) -> None:
    """Raise OutputTooLarge for a run output, or one node's output, whose JSON is over cap.

    Node outputs too: abstractruntime keeps each visual node's result in vars._temp.node_outputs (and
    the last one again in vars._last_output), saved after every step - a 200 kB result made a 1 MB
    state before the run even completed (the value five times over)."""
    check_output("the run's output", run.output, cap)
    temp = run.vars.get("_temp") if isinstance(run.vars, dict) else None
    outputs = temp.get("node_outputs") if isinstance(temp, dict) else None
    if isinstance(outputs, dict):
        for node_id, value in outputs.items():
            check_output(f"the output of node {node_id!r}", value, cap)


def run_columns(run: RunState, now: float) -> dict[str, Any]:
    """Column values mirroring a RunState, written in the same statement as its JSON."""
    waiting = run.waiting
    paused = is_paused_vars(run.vars)
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "status": run.status.value,
        "current_node": run.current_node,
        "wait_reason": waiting.reason.value if waiting else None,
        "wait_key": waiting.wait_key if waiting else None,
        "wait_until": waiting.until if waiting and waiting.reason in _DEADLINE_WAITS else None,
        "paused": int(paused),
        "parent_run_id": run.parent_run_id,
        "session_id": run.session_id,
        "actor_id": run.actor_id,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "output_failed": int(output_failed(run)),
        "session_kind": automation_index_fields(run.vars, run_id=run.run_id)["session_kind"],
        "sub_run_id": awaited_child(run),
        "run_json": encode(run),
        "due_at": due_at(run, paused, now),
        "now": now,
    }


class SqliteRunStore(RunStore):  # type: ignore[misc]  # abstractruntime ships no types
    """RunStore + QueryableRunStore + event-waiter lookup over the shared SQLite file."""

    def __init__(
        self,
        db: Database,
        *,
        fence: LeaseHolder | None = None,
        clock: Callable[[], float] = time.time,
        max_output_bytes: int | None = None,
        unit: RunUnit | None = None,
    ) -> None:
        self.db = db
        self.fence = fence
        self.clock = clock
        # The runner's cap on outputs (shared_store.limits): a save holding a bigger one raises
        # OutputTooLarge and writes nothing. None: no cap (the API's writes, tests).
        self.max_output_bytes = max_output_bytes
        self.unit = unit  # the runner's unit of work: a save commits what it staged, in one transaction
        self.born: list[str] = []  # runs this store created leased to its fence (to release after)
        # Runs the runner is starting now: it read each queued under the lease it holds, in this claim,
        # so their creation cannot find them otherwise and is staged like a save (see create_if_absent).
        self.starting: set[str] = set()
        # When each run this store saved is next due, as of that save: what a release settles with,
        # without reading the run's state back.
        self.last_due: dict[str, dict[str, Any]] = unit.last_due if unit is not None else {}

    # --- writes (fenced) -----------------------------------------------------------------------
    def save(self, run: RunState) -> None:
        self._write(run, q.SAVE_RUN_FENCED if self.fence else q.SAVE_RUN_UNLEASED)

    def create_if_absent(self, run: RunState) -> tuple[RunState, bool]:
        """Create the run, or fill its queued row; an existing started run is returned unchanged.

        A run the runner is starting (`starting`: read queued under its lease in this claim) has its
        creation staged, committed with the rest of its claim (for a short run, its release): one
        commit fewer a run."""
        if run.run_id in self.starting and self.unit is not None and self.fence is not None:
            self.starting.discard(run.run_id)
            self._write(run, q.CREATE_RUN_FENCED, create=True)
            return run, True
        if self._write(run, q.CREATE_RUN_FENCED if self.fence else q.CREATE_RUN_UNLEASED, strict=False):
            return run, True
        row = self.db.query_one(q.RUN_STATUS, (run.run_id,))
        existing = self.load(run.run_id) if row is not None and row[0] != "queued" else None
        if existing is None:
            # Queued and leased to someone else: not ours to start.
            raise self._lost(run.run_id)
        verify_run_identity(existing, run)
        return existing, False

    def _write(self, run: RunState, sql: str, *, strict: bool = True, create: bool = False) -> bool:
        now = self.clock()
        params = run_columns(run, now)
        cap = self.max_output_bytes
        # The whole document bounds every part of it: only a state over the cap is looked into.
        if cap is not None and len(params["run_json"]) > cap:
            check_outputs(run, cap)
        fence = self.fence
        if fence is None:
            params.update(born_owner=None, born_expires_at=None, born_epoch=0)
        else:
            epoch = fence.epoch(run.run_id)
            params.update(
                owner=fence.owner,
                epoch=epoch,
                born_owner=fence.owner,
                born_expires_at=now + fence.lease_s,
                born_epoch=1,
            )

        def save(conn: apsw.Connection) -> bool:
            conn.execute(sql, params)
            if conn.changes() != 1:
                return False
            conn.execute(q.SAVE_RUN_STATE, params)
            return True

        if create and self.unit is not None and params["epoch"] is not None:
            self.unit.stage_create(run.run_id, params)
            return True
        if self.unit is not None and fence is not None and strict and params["epoch"] is not None:
            # A save of a run this runner holds is staged: it commits with the unit's next commit
            # (the release, a flush before a blocking effect, a read of the run by the unit), fenced
            # by the unit's up-front lease check. Saves staged after a command's outcome keep the
            # order the due_at computation needs. On bench-echo (start, one step, complete)
            # a run cost 4.5 commits, now 2.5 (claim, start, release): 1 runner 322 -> 482 runs/s.
            self.unit.stage_save(run.run_id, params)
            return True
        if self.unit is not None:
            # What the unit staged (command outcomes first: a command resolved here no longer counts
            # as pending in the due_at of the save) commits with this state, or nothing does.
            written = self.unit.commit(save, fenced_by=run.run_id if fence is not None else None)
        else:
            written = write_unit(self.db, save)
        if written:
            self.last_due[run.run_id] = {k: params[k] for k in ("due_at", "paused", "sub_run_id")}
        if not written:
            if strict:
                if self.unit is not None:
                    self.unit.discard()  # the run was taken over: what it staged is not ours to write
                raise self._lost(run.run_id)
            return False
        if fence is not None and params["epoch"] is None:
            fence.adopt(run.run_id, 1)  # we just created it: born leased to us
            self.born.append(run.run_id)
        return True

    def _lost(self, run_id: str) -> LeaseLost:
        return self.fence.lost(run_id) if self.fence else LeaseLost(run_id, None, None)

    # --- reads -----------------------------------------------------------------------------------
    def load(self, run_id: str) -> RunState | None:
        staged = self.unit.staged_save(run_id) if self.unit is not None else None
        if staged is not None:  # read your writes: the save the unit will commit
            return decode_run(staged["run_json"])
        row = self.db.query_one(q.LOAD_RUN, (run_id,))
        if row is None or row[0] is None:
            return None
        return decode_run(row[0])

    def probe_control(self, run_id: str) -> tuple[str, bool] | None:
        """(status, paused) from columns, without decoding the run document."""
        staged = self.unit.staged_save(run_id) if self.unit is not None else None
        if staged is not None:
            return (str(staged["status"]), bool(staged["paused"]))
        row = self.db.query_one(q.PROBE_CONTROL, (run_id,))
        return None if row is None else (str(row[0]), bool(row[1]))

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        wait_reason: WaitReason | None = None,
        workflow_id: str | None = None,
        limit: int = 100,
    ) -> list[RunState]:
        filters: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("wait_reason", wait_reason), ("workflow_id", workflow_id)):
            if value is not None:
                filters.append(column)
                params.append(getattr(value, "value", value))
        return self._runs(q.list_runs(filters), (*params, max(1, int(limit))))

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        return self._runs(q.LIST_DUE_WAIT_UNTIL, (now_iso, max(1, int(limit))))

    def list_children(self, *, parent_run_id: str, status: RunStatus | None = None) -> list[RunState]:
        if status is None:
            return self._runs(q.LIST_CHILDREN, (parent_run_id,))
        return self._runs(q.LIST_CHILDREN_BY_STATUS, (parent_run_id, status.value))

    def list_event_waiters(self, *, wait_keys: list[str], limit: int = 100) -> list[RunState]:
        """Runs in WAITING(EVENT) on any of wait_keys, through the runs_event_waiters index."""
        return self._runs(q.LIST_EVENT_WAITERS, (encode(list(wait_keys)).decode(), max(1, int(limit))))

    def list_event_waiters_by_prefix(self, *, prefix: str, limit: int = 100) -> list[RunState]:
        # Range [prefix, prefix + U+10FFFF) keeps the scan on the index.
        return self._runs(q.LIST_EVENT_WAITERS_BY_PREFIX, (prefix, prefix + "\U0010ffff", max(1, int(limit))))

    def session_kinds(self, session_id: str) -> frozenset[str]:
        """The session_kind values of a session's runs (abstractruntime's session attribution)."""
        return frozenset(str(row[0]) for row in self.db.query(q.SESSION_KINDS, (session_id,)))

    def next_wait_deadline(self) -> str | None:
        row = self.db.query_one(q.NEXT_WAIT_DEADLINE)
        return None if row is None else row[0]

    def _runs(self, sql: str, params: tuple[Any, ...]) -> list[RunState]:
        return [decode_run(row[0]) for row in self.db.query(sql, params)]
