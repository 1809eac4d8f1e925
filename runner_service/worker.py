"""One worker thread: claim a due run by lease → start it if queued → apply its commands in seq order →
resume it if its child finished → tick it → give the lease back.

Each worker owns its Runtime, stores and compiled specs (specs are not thread-safe); the leases and
their fencing are shared by the runner process (one LeaseHolder, one owner id).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from abstractruntime.core.models import RunState, RunStatus, StepRecord, StepStatus
from abstractruntime.core.runtime import Runtime
from abstractruntime.history_bundle import persist_workflow_snapshot

from shared_store import Database, LeaseHolder, LeaseLost, StoreError
from shared_store import queries as q
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.flow_control import admit
from shared_store.inbox import command_from_row
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore, run_columns
from shared_store.schedules import get_schedule
from shared_store.starts import GATEWAY_ACTOR, start_request

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


@dataclass(frozen=True)
class WorkerSettings:
    artifacts_dir: Path
    steps_per_tick: int = 50  # between two looks at the run's inbox
    slice_s: float = 2.0  # then the lease goes back, so one long run cannot starve the others
    commands_per_pass: int = 100
    workspaces_dir: Path | None = None  # default: beside the artifacts (DATA_DIR/workspaces)

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

    def close(self) -> None:
        """Free what the worker's handlers hold (the LLM provider's connections)."""
        close = getattr(self._handlers, "close", None)
        if callable(close):
            close()
        sandbox.close_thread_client()

    def context(self) -> CommandContext:
        """Built lazily in the worker's own thread: the compiled specs belong to it."""
        if self._ctx is None:
            run_store = SqliteRunStore(self.db, fence=self.fence)
            artifacts = SqliteArtifactStore(self.db, self.settings.artifacts_dir, fence=self.fence)
            host = BundleHost(self.db)
            from abstractruntime.core.models import EffectType

            self._handlers = self._effect_handlers(artifacts) if self._effect_handlers else None
            handlers: dict[Any, Any] = dict(self._handlers or {})
            handlers[EffectType.EMIT_EVENT] = make_emit_event_handler(self.db)
            if kg_stack_installed():  # runs' memory KG effects write to the store /kg/query reads
                handlers.update(kg_effect_handlers(MediaSettings.from_env(), run_store=run_store))
            runtime = Runtime(
                run_store=run_store,
                ledger_store=SqliteLedgerStore(self.db, fence=self.fence),
                artifact_store=artifacts,
                workflow_registry=host,
                effect_handlers=handlers,
            )
            self._ctx = CommandContext(self.db, runtime, run_store, self.fence, host)
        return self._ctx

    # --- one claimed run -----------------------------------------------------------------------
    def process(self, run_id: str) -> None:
        """Do what the run is due for, then release its lease (and those of runs it created)."""
        run_store = self.context().run_store
        self.busy = (run_id, time.monotonic())
        try:
            with (
                structlog.contextvars.bound_contextvars(run_id=run_id),
                run_workspace(self.settings.workspaces, run_id),
                sandbox.run_context(run_id, lambda: self._cancel_pending(run_id), self._park),
            ):
                self._process(run_id)
        except LeaseLost as exc:
            log.warning("lease_lost", run_id=run_id, epoch=exc.epoch)
        except StoreError:
            raise
        except Exception as exc:  # anything else about this run fails the run, never the runner
            log.exception("run_error", run_id=run_id)
            self._fail_anyhow(run_id, f"{type(exc).__name__}: {exc}")
        finally:
            self.busy = None
            self.processed += 1
            born, run_store.born = run_store.born, []
            for held in (run_id, *born):
                self.fence.release(held, settle=self._settle(held))

    def fail_poisoned(self, run_id: str, stalled: int) -> None:
        """A run whose last `stalled` claims ended without a release while a worker was on it: its
        ticks killed the runner (or stalled it past the tick timeout). Failed with that reason
        instead of being claimed forever."""
        try:
            self._fail_anyhow(
                run_id,
                f"poison run: its tick killed or timed out the runner {stalled} times "
                f"({stalled} claims ended mid-tick without a release)",
            )
        finally:
            self.fence.release(run_id, settle=self._settle(run_id))

    def _park(self, parked: bool) -> None:
        if self._on_park is not None:
            self._on_park(self, parked)

    def _cancel_pending(self, run_id: str) -> bool:
        return bool((self.db.query_one(q.CANCEL_PENDING, (run_id,)) or (0,))[0])

    def _settle(self, run_id: str) -> dict[str, Any] | None:
        """When the run is next due, judged from its state (None: leave due_at alone). The last save
        made while holding it already computed that; only a run not saved meanwhile is read back."""
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
        row = self.db.query_one(q.RUN_STATUS, (run_id,))
        if row is None:
            return
        if row[0] in ("queued", "running", "waiting"):
            admission = admit(self.db, self.fence, run_id)
            if not admission.go:  # no slot of its key (held), or beyond its key's rate (deferred)
                log.info("run_not_admitted", run_id=run_id, why=admission.why)
                return
        if row[0] in ("queued", "running"):
            start = start_request(self.db, run_id) or {}
            if start.get("media"):  # a media job: executed (or retried after a crash), never ticked
                self._media_job(ctx, run_id, start)
                return
        if row[0] == "queued":
            # The start's work carries the id of the API request that asked for it (its log lines).
            request_id = (start_request(self.db, run_id) or {}).get("request_id")
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                if not self._start(ctx, run_id):
                    return
                self._work(ctx, run_id)
            return
        self._work(ctx, run_id)

    def _media_job(self, ctx: CommandContext, run_id: str, start: dict[str, Any]) -> None:
        kind = str((start.get("media") or {}).get("kind") or "unknown")
        started = time.perf_counter()
        outcome = "error"
        try:
            with structlog.contextvars.bound_contextvars(request_id=start.get("request_id")):
                execute_job(ctx, run_id, start)
            run = ctx.run_store.load(run_id)
            outcome = run.status.value if run is not None else "unknown"
        finally:
            self.metrics.media_job.labels(kind, outcome).observe(time.perf_counter() - started)

    def _work(self, ctx: CommandContext, run_id: str) -> None:
        """Commands, schedule firings, a finished child, ticks: until the slice ends or the run waits."""
        deadline = time.monotonic() + self.settings.slice_s
        while True:
            self._apply_commands(ctx, run_id)
            if get_schedule(self.db, run_id) is not None:
                fired = fire_due(ctx, run_id)
                if fired:
                    log.info("schedule_fired", run_id=run_id, children=fired)
                return  # a scheduled parent is never ticked
            run = ctx.run_store.load(run_id)
            if run is None:
                return
            if not run.vars.get("_runtime", {}).get("control", {}).get("paused"):
                resume_finished_child(ctx, run)
            if not self._tick(ctx, run_id) or self.stopping.is_set() or time.monotonic() > deadline:
                return

    def _start(self, ctx: CommandContext, run_id: str) -> bool:
        request = start_request(self.db, run_id) or {}
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
        ctx.runtime.start(
            workflow=spec,
            # The workspace is the gateway's choice: a client's workspace keys are dropped.
            vars=strip_client_keys(
                dict(request.get("input_data") or {}), workspace_dir(self.settings.workspaces, run_id)
            ),
            # As the original: a run without a session is its own session; runs are the gateway's.
            session_id=request.get("session_id") or run_id,
            parent_run_id=request.get("parent_run_id"),
            run_id=run_id,
            actor_id=GATEWAY_ACTOR,
        )
        self._snapshot(ctx, run_id, workflow_id)
        self.metrics.starts.inc()
        log.info("run_started", run_id=run_id, workflow_id=workflow_id)
        return True

    def _snapshot(self, ctx: CommandContext, run_id: str, workflow_id: str) -> None:
        """As the original: the workflow the run started with, kept as an artifact of the run and
        referenced from vars._runtime.workflow_snapshot (history_bundle's `workflow_snapshot`), so a
        run can be replayed offline even after its bundle is replaced. abstractruntime writes both."""
        document = ctx.host.document(workflow_id)
        if document is None:
            return
        bundle_ref, _, flow_id = workflow_id.rpartition(":")
        snapshot = {
            "kind": "visualflow_json",
            "bundle_ref": bundle_ref,
            "flow_id": flow_id,
            "visualflow": document,
        }
        try:
            persist_workflow_snapshot(
                run_store=ctx.run_store,
                artifact_store=ctx.runtime.artifact_store,
                run_id=run_id,
                workflow_id=workflow_id,
                snapshot=snapshot,
                format="visualflow_json",
            )
        except StoreError:  # LeaseLost, or the db failing: not to be swallowed
            raise
        except Exception as exc:  # a snapshot is a convenience; the run goes on without one
            if isinstance(exc.__cause__, StoreError):  # the runtime wraps a failed save in RuntimeError
                raise exc.__cause__ from None
            log.warning("workflow_snapshot_failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")

    def _apply_commands(self, ctx: CommandContext, run_id: str) -> None:
        rows = self.db.query(q.PENDING_RUN_COMMANDS, (run_id, self.settings.commands_per_pass))
        for row in rows:
            command = command_from_row(row)
            with structlog.contextvars.bound_contextvars(request_id=command.request_id):
                status, error = apply_command(ctx, command)
                log.info(
                    "command", run_id=run_id, seq=command.seq, type=command.type, status=status, error=error
                )
            self.metrics.commands.labels(command.type, status).inc()
            if command.type == "cancel" and status == "applied":
                self._observe_end(ctx.run_store.load(run_id))

    def _tick(self, ctx: CommandContext, run_id: str) -> bool:
        """One tick of up to steps_per_tick steps; True when the run is still RUNNING afterwards."""
        run = ctx.run_store.load(run_id)
        if run is None or run.status not in (RunStatus.RUNNING, RunStatus.WAITING):
            return False
        started = time.perf_counter()
        try:
            spec = ctx.host.spec(run.workflow_id)
            run = ctx.runtime.tick(workflow=spec, run_id=run_id, max_steps=self.settings.steps_per_tick)
            self.metrics.tick.observe(time.perf_counter() - started)
        except StoreError:  # LeaseLost, or the db failing now (full, busy): not the run's fault
            raise
        except sandbox.SandboxLimit as exc:  # a code node over its limit: the run fails, saying which
            self._fail(ctx, run_id, str(exc))
            return False
        except sandbox.SandboxCancelled:  # its code node was killed; the pending cancel applies now
            self._apply_commands(ctx, run_id)
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
    def _fail_anyhow(self, run_id: str, error: str) -> None:
        ctx = self.context()
        try:
            if self.db.query_one(q.RUN_STATUS, (run_id,)) == ("queued",):
                self._fail_unstarted(
                    ctx, run_id, start_request(self.db, run_id) or {}, f"cannot start: {error}"
                )
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
        ctx.run_store.create_if_absent(run)
        self._record_failure(ctx, run, error)
        log.error("run_failed", run_id=run_id, error=error)

    def _record_failure(self, ctx: CommandContext, run: RunState, error: str) -> None:
        ctx.run_store.save(run)
        self._observe_end(run)
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
        ctx.runtime.ledger_store.append(record)
