"""One worker thread: claim a due run by lease → start it if queued → apply its commands in seq order →
resume it if its child finished → tick it → give the lease back.

Each worker owns its Runtime, stores, compiled specs (specs are not thread-safe) and its unit of
work (shared_store.run_unit): the stores stage what a step writes, and the runtime's state saves
commit it, fenced, in one transaction. The leases and their fencing are shared by the runner
process (one LeaseHolder, one owner id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from abstractruntime.core.models import EffectType, RunState, RunStatus, StepRecord, StepStatus
from abstractruntime.core.runtime import Runtime

from shared_store import Database, LeaseHolder, LeaseLost, StoreError, StoreUnavailable
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.flow_control import admit
from shared_store.inbox import Command
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.limits import DEFAULT_MAX_OUTPUT_BYTES, OutputTooLarge
from shared_store.logs import bound_fields
from shared_store.run_store import SqliteRunStore, run_columns
from shared_store.run_unit import RunStep, RunUnit
from shared_store.starts import GATEWAY_ACTOR

from . import sandbox
from .bundle_host import BundleHost, WorkflowUnavailable
from .commands import CommandContext, apply_command, resume_finished_child
from .events import make_emit_event_handler
from .media.jobs import execute_job
from .media.kg import kg_effect_handlers
from .media.kg import stack_installed as kg_stack_installed
from .media.settings import MediaSettings
from .metrics import RunnerMetrics
from .schedules import fire_due, start_parent
from .workspace import run_workspace, strip_client_keys, workspace_dir

log = structlog.get_logger("runner")
# No space, or over quota: a condition of the machine that passes, not of the run.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

# Effects the runtime answers at once, from the run's own state (no I/O, no waiting): the records
# staged around them commit with the step's save. Before any other effect (an LLM call, a tool, a
# child run, memory, a delivery) the unit is committed on its own, so the step's STARTED record is
# visible to SSE readers while the effect runs, and no write lock is ever held across it.
INSTANT_EFFECTS = frozenset(
    {
        EffectType.ANSWER_USER,
        EffectType.ASK_USER,
        EffectType.WAIT_EVENT,
        EffectType.WAIT_UNTIL,
        EffectType.VARS_QUERY,
    }
)


def _flushing(unit: RunUnit, handler: Callable[..., Any]) -> Callable[..., Any]:
    def handle(*args: Any, **kwargs: Any) -> Any:
        unit.flush()
        return handler(*args, **kwargs)

    return handle


@dataclass(frozen=True)
class WorkerSettings:
    artifacts_dir: Path
    steps_per_tick: int = 50  # between two looks at the run's inbox
    slice_s: float = 2.0  # then the lease goes back, so one long run cannot starve the others
    commands_per_pass: int = 100
    workspaces_dir: Path | None = None  # default: beside the artifacts (DATA_DIR/workspaces)
    # ABSTRACTGATEWAY_MAX_OUTPUT_BYTES: a run output, node output or ledger result over it fails the run
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    @property
    def workspaces(self) -> Path:
        return self.workspaces_dir or self.artifacts_dir.parent / "workspaces"


class Worker:
    def __init__(
        self,
        db: Database,
        fence: LeaseHolder,
        settings: WorkerSettings,
        *,
        stopping: threading.Event,
        effect_handlers: Callable[[Any], dict[Any, Any]] | None = None,
        metrics: RunnerMetrics | None = None,
        on_park: Callable[[Worker, bool], None] | None = None,
    ) -> None:
        self.db = db
        self.fence = fence
        self.metrics = metrics or RunnerMetrics(fence)
        self.settings = settings
        self.stopping = stopping
        self._effect_handlers = effect_handlers
        self._ctx: CommandContext | None = None
        self._handlers: Any = None
        self.processed = 0
        self.busy: tuple[str, float] | None = None  # (run id, monotonic start) while processing one
        self.parked = False  # waiting on a sandboxed code node
        self.pending: list[Any] = []  # the rest of the claimed batch (Leases), given back when parked
        self._on_park = on_park
        # workflow id -> (snapshot JSON, its sha256, its first artifact's metadata)
        self._snapshots: dict[str, tuple[bytes, str, Any]] = {}

    def close(self) -> None:
        """Free what the worker's handlers hold (the LLM provider's connections)."""
        close = getattr(self._handlers, "close", None)
        if callable(close):
            close()
        sandbox.close_thread_client()

    def context(self) -> CommandContext:
        """Built lazily in the worker's own thread: the compiled specs belong to it."""
        if self._ctx is None:
            cap = self.settings.max_output_bytes
            unit = RunUnit(self.db, self.fence)
            run_store = SqliteRunStore(self.db, fence=self.fence, max_output_bytes=cap, unit=unit)
            artifacts = SqliteArtifactStore(self.db, self.settings.artifacts_dir, fence=self.fence, unit=unit)
            host = BundleHost(self.db)

            self._handlers = self._effect_handlers(artifacts) if self._effect_handlers else None
            handlers: dict[Any, Any] = dict(self._handlers or {})
            handlers[EffectType.EMIT_EVENT] = make_emit_event_handler(self.db)
            if kg_stack_installed():  # runs' memory KG effects write to the store /kg/query reads
                handlers.update(kg_effect_handlers(MediaSettings.from_env(), run_store=run_store))
            runtime = Runtime(
                run_store=run_store,
                ledger_store=SqliteLedgerStore(self.db, fence=self.fence, max_output_bytes=cap, unit=unit),
                artifact_store=artifacts,
                workflow_registry=host,
                effect_handlers=handlers,
            )
            # The runtime's own handlers too (its registry is where it looks them up).
            registry: dict[Any, Any] = runtime._handlers
            for effect_type, handler in list(registry.items()):
                if effect_type not in INSTANT_EFFECTS:
                    registry[effect_type] = _flushing(unit, handler)
            self._ctx = CommandContext(self.db, runtime, run_store, self.fence, host, unit)
        return self._ctx

    # --- one claimed run -----------------------------------------------------------------------
    def process(self, run_id: str) -> None:
        """Do what the run is due for, then release its lease (and those of runs it created)."""
        ctx = self.context()
        run_store = ctx.run_store
        self.busy = (run_id, time.monotonic())
        released = False
        try:
            with (
                bound_fields(run_id=run_id),
                run_workspace(self.settings.workspaces, run_id),
                sandbox.run_context(run_id, lambda: self._cancel_pending(run_id), self._park),
            ):
                self._process(run_id)
                # What no save carried (the records a runtime appends after its last save) commits
                # with the release.
                ctx.unit.release(run_id, settle=self._settle(run_id))
                released = True
        except LeaseLost as exc:
            log.warning("lease_lost", run_id=run_id, epoch=exc.epoch)
        except StoreError:
            raise
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                log.exception("run_error", run_id=run_id)
                self._fail_anyhow(run_id, f"{type(exc).__name__}: {exc}")
            else:  # a file the run writes (an artifact blob, its workspace) on a full disk: the
                # store's own condition, ridden out like the db's — the run is tried again later
                raise StoreUnavailable(f"disk full writing a run's files: {exc}") from exc
        except OutputTooLarge as exc:  # from a command's resume, say: the run fails, saying why
            log.error("output_too_large", run_id=run_id, size=exc.size, cap=exc.cap)
            self._fail_anyhow(run_id, str(exc))
        except Exception as exc:  # anything else about this run fails the run, never the runner
            log.exception("run_error", run_id=run_id)
            self._fail_anyhow(run_id, f"{type(exc).__name__}: {exc}")
        finally:
            ctx.unit.discard()  # anything left is from a path that ended in an error: never written
            self.busy = None
            self.processed += 1
            born, run_store.born = run_store.born, []
            for held in (*(() if released else (run_id,)), *born):
                epoch = self.fence.epoch(held)
                if not self.fence.release(held, settle=self._settle(held)) and epoch is not None:
                    log.warning("lease_lost", run_id=held, epoch=epoch)  # taken over meanwhile

    def fail_poisoned(self, run_id: str, stalled: int) -> None:
        """A run whose last `stalled` claims ended without a release while a worker was on it: its
        ticks killed the runner (or stalled it past the tick timeout). Failed with that reason
        instead of being claimed forever."""
        reason = (
            f"poison run: its tick killed or timed out the runner {stalled} times "
            f"({stalled} claims ended mid-tick without a release)"
        )
        try:
            # Its ticks ran, though a first tick's start (staged with it) may never have committed.
            self._fail_anyhow(run_id, reason, unstarted=reason)
        finally:
            self.fence.release(run_id, settle=self._settle(run_id))

    def _park(self, parked: bool) -> None:
        if parked and self._ctx is not None:
            # A code node's wait got slow: what is staged (a start, earlier steps) commits now rather
            # than after it. Failing, it stays staged for the next commit (the tick goes on).
            with contextlib.suppress(StoreError):
                self._ctx.unit.flush()
        if self._on_park is not None:
            self._on_park(self, parked)

    def _cancel_pending(self, run_id: str) -> bool:
        return self.context().unit.cancel_pending(run_id)

    def _settle(self, run_id: str) -> dict[str, Any] | None:
        """When the run is next due, judged from its state (None: leave due_at alone). The last save
        made while holding it already computed that; only a run not saved meanwhile is read back."""
        staged = self.context().unit.staged_save(run_id)
        if staged is not None:  # the release commits this save: it settles with what it wrote
            return {key: staged[key] for key in ("due_at", "paused", "sub_run_id")}
        saved = self.context().run_store.last_due.pop(run_id, None)
        if saved is not None:
            return saved
        try:
            run = self.context().run_store.load(run_id)
        except Exception:  # a state we cannot read: keep it due, the next claim reports it
            return None
        if run is None:
            return None
        columns = run_columns(run, time.time())
        return {key: columns[key] for key in ("due_at", "paused", "sub_run_id")}

    def _process(self, run_id: str) -> None:
        ctx = self.context()
        step = ctx.unit.open(run_id, commands=self.settings.commands_per_pass)  # the one read
        if step is None:
            return
        if step.status in ("queued", "running", "waiting"):
            admission = admit(self.db, self.fence, run_id, flow=step.flow)
            if not admission.go:  # no slot of its key (held), or beyond its key's rate (deferred)
                log.info("run_not_admitted", run_id=run_id, why=admission.why)
                return
        start = step.start or {}
        if step.status in ("queued", "running") and start.get("media"):
            # A media job: executed (or retried after a crash), never ticked.
            self._media_job(ctx, run_id, start)
            return
        if step.status == "queued":
            # The start's work carries the id of the API request that asked for it (its log lines).
            with bound_fields(request_id=start.get("request_id")):
                if not self._start(ctx, run_id, start):
                    return
                # Commands sent while it was queued were in the claim's read; its state is new.
                self._work(ctx, run_id, dataclasses.replace(step, status="running", state_json=None))
            return
        self._work(ctx, run_id, step)

    def _media_job(self, ctx: CommandContext, run_id: str, start: dict[str, Any]) -> None:
        kind = str((start.get("media") or {}).get("kind") or "unknown")
        started = time.perf_counter()
        outcome = "error"
        try:
            with bound_fields(request_id=start.get("request_id")):
                execute_job(ctx, run_id, start)
            run = ctx.run_store.load(run_id)
            outcome = run.status.value if run is not None else "unknown"
        finally:
            self.metrics.media_job.labels(kind, outcome).observe(time.perf_counter() - started)

    def _work(self, ctx: CommandContext, run_id: str, step: RunStep | None) -> None:
        """Commands, schedule firings, a finished child, ticks: until the slice ends or the run waits.

        `step`: what the claim's one read found (then one read per further pass)."""
        deadline = time.monotonic() + self.settings.slice_s
        while True:
            if step is None:
                step = ctx.unit.open(run_id, commands=self.settings.commands_per_pass)
                if step is None:
                    return
            if step.commands:
                self._apply_commands(ctx, step.commands, scheduled=step.scheduled)
            if step.scheduled:
                fired = fire_due(ctx, run_id)
                if fired:
                    log.info("schedule_fired", run_id=run_id, children=fired)
                return  # a scheduled parent is never ticked
            started = None
            if step.state_json is None and not step.commands:
                run = None  # just started: RUNNING, and the tick reads the state the start saved
                started = str((step.start or {}).get("workflow_id") or "") or None
            else:
                # The state as read, unless commands changed it.
                run = step.state() if not step.commands else ctx.run_store.load(run_id)
                if run is None:
                    return
                paused = run.vars.get("_runtime", {}).get("control", {}).get("paused")
                if not paused and resume_finished_child(ctx, run):
                    run = None  # resumed: the tick reads the state it saved
            ticked = self._tick(ctx, run_id, run, started=started)
            if not ticked or self.stopping.is_set() or time.monotonic() > deadline:
                return
            step = None

    def _start(self, ctx: CommandContext, run_id: str, request: dict[str, Any]) -> bool:
        if request.get("schedule"):
            start_parent(ctx, run_id)
            log.info("schedule_started", run_id=run_id, workflow_id=request.get("workflow_id"))
            return True
        workflow_id = str(request.get("workflow_id") or "")
        try:
            spec = ctx.host.spec(workflow_id)
        except WorkflowUnavailable as exc:
            self._fail_unstarted(ctx, run_id, request, f"cannot start: {exc}")
            return False
        # The workspace is the gateway's choice: a client's workspace keys are dropped.
        run_vars = strip_client_keys(
            dict(request.get("input_data") or {}), workspace_dir(self.settings.workspaces, run_id)
        )
        snapshot = self._snapshot(ctx, run_id, workflow_id)
        if snapshot is not None:
            runtime_ns = run_vars.get("_runtime")
            run_vars["_runtime"] = {
                **(runtime_ns if isinstance(runtime_ns, dict) else {}),
                "workflow_snapshot": snapshot,
            }
        # Read queued under this claim's lease: its creation commits with the rest of the claim.
        ctx.run_store.starting.add(run_id)
        try:
            ctx.runtime.start(
                workflow=spec,
                vars=run_vars,
                # As the original: a run without a session is its own session; runs are the gateway's.
                session_id=request.get("session_id") or run_id,
                parent_run_id=request.get("parent_run_id"),
                run_id=run_id,
                actor_id=GATEWAY_ACTOR,
            )
        finally:
            ctx.run_store.starting.discard(run_id)
        self.metrics.starts.inc()
        log.info("run_started", run_id=run_id, workflow_id=workflow_id)
        return True

    def _snapshot(self, ctx: CommandContext, run_id: str, workflow_id: str) -> dict[str, Any] | None:
        """As the original: the workflow the run started with, kept as an artifact of the run and
        referenced from vars._runtime.workflow_snapshot (history_bundle's `workflow_snapshot`), so a
        run can be replayed offline even after its bundle is replaced.

        The document is encoded once per workflow (its blob is content-addressed: written once);
        the run's artifact row is staged in the unit and the ref rides in the start's vars, so both
        commit with the run's creation. abstractruntime's persist_workflow_snapshot loaded the state
        and saved it again in two more transactions (+2.9 ms per start measured)."""
        known = self._snapshots.get(workflow_id)
        if known is None:
            document = ctx.host.document(workflow_id)
            if document is None:
                return None
            bundle_ref, _, flow_id = workflow_id.rpartition(":")
            snapshot = {
                "kind": "visualflow_json",
                "bundle_ref": bundle_ref,
                "flow_id": flow_id,
                "visualflow": document,
            }
            content = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            sha = hashlib.sha256(content).hexdigest()
            tags = {
                "kind": "workflow_snapshot",
                "workflow_id": workflow_id,
                "format": "visualflow_json",
                "sha256": sha,
            }
            meta = ctx.runtime.artifact_store.store(
                content, content_type="application/json", run_id=run_id, tags=tags
            )
            self._snapshots[workflow_id] = (content, sha, meta)
        else:
            content, sha, like = known
            meta = ctx.runtime.artifact_store.store_copy(like, content, run_id=run_id)
        return {
            "workflow_id": workflow_id,
            "format": "visualflow_json",
            "sha256": sha,
            "artifact_id": meta.artifact_id,
            "created_at": datetime.now(UTC).isoformat(),
        }

    def _apply_commands(self, ctx: CommandContext, commands: list[Command], *, scheduled: bool) -> None:
        for command in commands:
            with bound_fields(request_id=command.request_id):
                status, error = apply_command(ctx, command, scheduled=scheduled)
                log.info(
                    "command",
                    run_id=command.run_id,
                    seq=command.seq,
                    type=command.type,
                    status=status,
                    error=error,
                )
            self.metrics.commands.labels(command.type, status).inc()
            if command.type == "cancel" and status == "applied":
                self._observe_end(ctx.run_store.load(command.run_id))

    def _pending_commands(self, ctx: CommandContext, run_id: str) -> None:
        """Apply what waits now (a cancel that killed a running code node)."""
        step = ctx.unit.open(run_id, commands=self.settings.commands_per_pass)
        if step is not None and step.commands:
            self._apply_commands(ctx, step.commands, scheduled=step.scheduled)

    def _tick(
        self, ctx: CommandContext, run_id: str, run: RunState | None, *, started: str | None = None
    ) -> bool:
        """One tick of up to steps_per_tick steps; True when the run is still RUNNING afterwards.

        `run`: the state as last read (None: read it here, unless `started` names the workflow of a
        run just started: the runtime's tick reads its state anyway)."""
        workflow_id = started
        if workflow_id is None:
            if run is None:
                run = ctx.run_store.load(run_id)
            if run is None or run.status not in (RunStatus.RUNNING, RunStatus.WAITING):
                return False
            workflow_id = run.workflow_id
        # What earlier ticks staged commits before this one: a reader sees each tick's records as
        # it ends, not at the release. A run's first tick carries its start (staged: its creation,
        # snapshot and start record) and commits with it, one commit fewer a run; should a code node
        # wait long, the worker parks and commits what is staged then (_park).
        if started is None:
            ctx.unit.flush()
        began = time.perf_counter()
        try:
            spec = ctx.host.spec(workflow_id)
            run = ctx.runtime.tick(workflow=spec, run_id=run_id, max_steps=self.settings.steps_per_tick)
            self.metrics.tick.observe(time.perf_counter() - began)
        except StoreError:  # LeaseLost, or the db failing now (full, busy): not the run's fault
            raise
        except sandbox.SandboxLimit as exc:  # a code node over its limit: the run fails, saying which
            self._fail(ctx, run_id, str(exc))
            return False
        except OutputTooLarge as exc:  # refused unwritten; the run fails from its last stored state
            log.error("output_too_large", run_id=run_id, size=exc.size, cap=exc.cap)
            self._fail(ctx, run_id, str(exc))
            return False
        except sandbox.SandboxCancelled:  # its code node was killed; the pending cancel applies now
            self._pending_commands(ctx, run_id)
            return False
        except Exception as exc:  # a tick that raises fails the run, with the reason in the ledger
            self._fail(ctx, run_id, f"tick raised {type(exc).__name__}: {exc}")
            return False
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            log.info("run_finished", run_id=run_id, status=run.status.value, error=run.error)
            self._observe_end(run)
        return run.status == RunStatus.RUNNING

    def _observe_end(self, run: RunState | None) -> None:
        """A run's duration, creation to end, once it reached a terminal status."""
        if run is None or run.status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            return
        try:
            elapsed = time.time() - datetime.fromisoformat(run.created_at).timestamp()
        except (TypeError, ValueError):
            return
        self.metrics.run_duration.labels(run.workflow_id, run.status.value).observe(max(0.0, elapsed))

    # --- failures ------------------------------------------------------------------------------
    def _fail_anyhow(self, run_id: str, error: str, *, unstarted: str | None = None) -> None:
        """Fail the run, from its last stored state; one still queued fails with `unstarted` (by
        default: it could not start)."""
        ctx = self.context()
        ctx.unit.discard()  # what the failed path staged is not written (its failure record is)
        try:
            step = ctx.unit.open(run_id, commands=0)
            if step is not None and step.status == "queued":
                reason = f"cannot start: {error}" if unstarted is None else unstarted
                self._fail_unstarted(ctx, run_id, step.start or {}, reason)
            else:
                self._fail(ctx, run_id, error)
        except LeaseLost:
            pass

    def _fail(self, ctx: CommandContext, run_id: str, error: str) -> None:
        run = ctx.run_store.load(run_id)
        if run is None or run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            return
        run.status = RunStatus.FAILED
        run.error = error
        run.waiting = None
        run.updated_at = datetime.now(UTC).isoformat()
        self._record_failure(ctx, run, error)
        log.error("run_failed", run_id=run_id, error=error)

    def _fail_unstarted(self, ctx: CommandContext, run_id: str, request: dict[str, Any], error: str) -> None:
        run = RunState.new(
            workflow_id=str(request.get("workflow_id") or "unknown"),
            entry_node="",
            session_id=request.get("session_id") or run_id,
            parent_run_id=request.get("parent_run_id"),
            vars=dict(request.get("input_data") or {}),
            run_id=run_id,
            actor_id=GATEWAY_ACTOR,
        )
        run.status = RunStatus.FAILED
        run.error = error
        # Read queued under this claim's lease: its creation is staged and commits with the failure
        # record (committed first, a reader could see it failed with a ledger that never said why).
        ctx.run_store.starting.add(run_id)
        try:
            ctx.run_store.create_if_absent(run)
        finally:
            ctx.run_store.starting.discard(run_id)
        self._record_failure(ctx, run, error)
        log.error("run_failed", run_id=run_id, error=error)

    def _record_failure(self, ctx: CommandContext, run: RunState, error: str) -> None:
        """The failed state and its failure record commit together (one unit): a crash can no
        longer leave a failed run whose ledger never says why."""
        now = datetime.now(UTC).isoformat()
        record = StepRecord(
            run_id=run.run_id,
            step_id=str(uuid.uuid4()),
            node_id=run.current_node or "",
            status=StepStatus.FAILED,
            error=error,
            started_at=now,
            ended_at=now,
            session_id=run.session_id,
        )
        ctx.runtime.ledger_store.append_failure(record)  # staged: it commits with the save below
        ctx.run_store.save(run)
        ctx.unit.flush()  # now: a path that ends in an error discards what is still staged
        self._observe_end(run)
