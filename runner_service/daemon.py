"""The runner process: registers itself, heartbeats its leases, runs worker threads, stops gracefully.

Idle cost: one read-only probe per poll interval (claimable runs, expired leases, pending events);
a write transaction only when there is something to claim or dispatch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar

import structlog

from shared_store import LeaseHolder, StoreError, StoreUnavailable, connect_store
from shared_store.bundles import get_bundle, import_flows_dir, list_bundles, record_check
from shared_store.limits import max_output_bytes
from shared_store.retention import Retention
from shared_store.runners import register_runner, runner_heartbeat, runner_stopped

from . import settings as runner_settings
from .bundle_host import BundleHost
from .events import dispatch_pending_events
from .maintenance import Maintenance
from .metrics import RunnerMetrics
from .sandbox import close_thread_client
from .webhooks import WebhookSender, WebhookSettings
from .worker import Worker, WorkerSettings

log = structlog.get_logger("runner")
T = TypeVar("T")


@dataclass
class RunnerSettings:
    db_path: Path
    artifacts_dir: Path
    flows_dir: Path | None = None
    # The shared PostgreSQL, when one is named; then db_path is unused and data_dir is this host's.
    db_url: str | None = None
    data_dir: Path | None = None
    runner_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    lease_s: float = 30.0
    poll_s: float = 0.05
    workers: int = 1
    claim_batch: int = 4
    retention_days: float | None = None  # finished runs older than this are deleted (None: kept)
    labels: list[str] = field(default_factory=list)  # claims take only runs whose requirements these meet
    # A run whose claims ended this many times in a row without a release while a worker was on it
    # (its tick killed the runner, or stalled it past tick_timeout_s) is failed, not claimed again.
    poison_claims: int = 3
    # Extra worker threads started while every worker waits on a sandboxed code node (up to its
    # limits, seconds by default): other runs keep being served meanwhile. They stop when idle.
    spare_workers: int = 2
    # A worker busy with one run longer than this stops the runner (exit 70; `serve` restarts it):
    # a thread cannot be killed, and a stalled tick would otherwise hold its run and worker forever.
    # Code nodes are bounded by the sandbox's own timeout well before this. 0: no watchdog.
    tick_timeout_s: float = field(default_factory=lambda: runner_settings.current().tick_timeout_s)


class Runner:
    def __init__(self, settings: RunnerSettings, *, effect_handlers: Any = None) -> None:
        self.settings = settings
        self.db = connect_store(
            settings.db_url or settings.db_path,
            data_dir=settings.data_dir,
            application_name=f"abstractgateway-runner-{settings.runner_id}"[:63],
        )
        self.fence = LeaseHolder(
            self.db, settings.runner_id, lease_s=settings.lease_s, labels=settings.labels
        )
        self.stopping = threading.Event()
        self.metrics = RunnerMetrics(self.fence)
        self._worker_settings = WorkerSettings(
            artifacts_dir=settings.artifacts_dir, max_output_bytes=max_output_bytes()
        )
        self._effect_handlers = effect_handlers
        self._spares: list[Worker] = []
        self._spare_lock = threading.Lock()
        self.workers = [self._new_worker() for _ in range(max(1, settings.workers))]

        self.maintenance = Maintenance(self.db, self.stopping)
        self.retention = Retention(self.db, settings.artifacts_dir, retention_days=settings.retention_days)
        self.maintenance.add("retention", self.retention.step)
        # Deliveries wait on the network (up to the timeout): their own thread, never delaying the rest.
        self.webhooks = WebhookSender(self.db, WebhookSettings.from_env())
        self.delivery = Maintenance(self.db, self.stopping, jobs=[("webhooks", self.webhooks.step)])

    def _new_worker(self) -> Worker:
        return Worker(
            self.db,
            self.fence,
            self._worker_settings,
            stopping=self.stopping,
            effect_handlers=self._effect_handlers,
            metrics=self.metrics,
            on_park=self._on_park,
        )

    # --- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or stop()); returns the exit code."""
        self._install_signals()
        register_runner(
            self.db, self.settings.runner_id, version=_version(), capabilities=self.capabilities()
        )
        if self.settings.flows_dir is not None:
            for problem in import_flows_dir(self.db, self.settings.flows_dir):
                log.warning("bundle_not_loaded", problem=problem)
        self._check_bundles()
        runner_heartbeat(self.db, self.settings.runner_id, metrics=self.metrics.text())
        log.info(
            "runner_started",
            runner_id=self.settings.runner_id,
            workers=len(self.workers),
            labels=self.fence.labels,
        )
        heart = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heart.start()
        threading.Thread(target=self._guard_loop, name="guard", daemon=True).start()
        maintenance = threading.Thread(target=self.maintenance.loop, name="maintenance")
        maintenance.start()
        delivery = threading.Thread(target=self.delivery.loop, name="webhooks")
        delivery.start()
        threads = [
            threading.Thread(target=self._work_loop, args=(worker,), name=f"worker-{i}")
            for i, worker in enumerate(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        maintenance.join()
        delivery.join()
        self.webhooks.close()
        try:
            released = self._once_more(self.fence.release_all)
            self._once_more(lambda: runner_stopped(self.db, self.settings.runner_id))
        except StoreError as exc:  # a full disk, say: the leases left behind expire after lease_s
            log.error("runner_stop_incomplete", runner_id=self.settings.runner_id, error=str(exc))
            self.db.close()
            return 1
        log.info("runner_stopped", runner_id=self.settings.runner_id, released=released)
        self.db.close()
        return 0

    @staticmethod
    def _once_more(call: Callable[[], T]) -> T:
        """Run `call` again once after StoreUnavailable: a connection the server dropped while the
        link was down fails on its first use after (PostgreSQL), and the next one is fresh."""
        try:
            return call()
        except StoreUnavailable:
            return call()

    def stop(self) -> None:
        self.stopping.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def capabilities(self) -> dict[str, Any]:
        """Published in the runners table: the API's discovery routes read it (never importing ML)."""
        published: dict[str, Any] = {
            "workers": len(self.workers),
            "lease_s": self.settings.lease_s,
            "labels": self.fence.labels,
        }
        try:
            from .media.capabilities import probe
        except ImportError:
            return published
        try:
            published.update(probe())
        except Exception as exc:  # a broken optional stack must not stop the runner
            log.warning("capability_probe_failed", error=str(exc))
        return published

    def _check_bundles(self) -> None:
        """Compile every catalogued bundle once; failures are recorded (health, listings), not fatal."""
        host = BundleHost(self.db)
        for info in list_bundles(self.db, all_versions=True, include_deprecated=True):
            errors = host.compile_errors(info.bundle_id, info.bundle_version)
            record_check(
                self.db,
                get_bundle(self.db, info.bundle_id, info.bundle_version),
                "; ".join(errors.values()) or None,
            )
            for flow_id, error in errors.items():
                log.warning("flow_does_not_compile", bundle=info.bundle_ref, flow_id=flow_id, error=error)
        close_thread_client()  # flow functions compiled here started a sandbox this thread no longer needs

    # --- loops ---------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        # Leases need a renewal every lease_s / 3; the published metrics at least every 5 s.
        interval = max(0.05, min(self.settings.lease_s / 3, 5.0))
        while not self.stopping.wait(interval):
            try:
                self._mark_stalled(older_than=interval)
                for lease in self.fence.heartbeat():
                    log.warning("lease_lost", run_id=lease.run_id, epoch=lease.epoch)
                runner_heartbeat(self.db, self.settings.runner_id, metrics=self.metrics.text())
            except StoreError as exc:
                log.error("heartbeat_failed", error=str(exc))

    def _busy(self) -> list[tuple[str, float]]:
        with self._spare_lock:
            workers = [*self.workers, *self._spares]
        return [busy for busy in (w.busy for w in workers) if busy is not None]

    def _mark_stalled(self, older_than: float) -> None:
        """Runs a worker has been on for a while count as stalled until released (one write per
        claim, only for runs held across a heartbeat: none in a normal tick of milliseconds)."""
        now = time.monotonic()
        runs = [run_id for run_id, since in self._busy() if now - since > older_than]
        if runs:
            self.fence.mark_stalled(runs)

    def _guard_loop(self) -> None:
        """Once a second, no db access: a stalled tick stops the runner; so does losing `serve`."""
        parent = runner_settings.current().supervisor_pid
        while not self.stopping.wait(1.0):
            self._watchdog()
            if parent and os.getppid() != int(parent):  # `serve` is gone (PDEATHSIG is the fast path)
                log.warning("supervisor_gone", supervisor_pid=parent)
                self.stop()

    # --- spare workers -------------------------------------------------------------------------
    def _on_park(self, worker: Worker, parked: bool) -> None:
        """Called in `worker`'s thread as it starts (True) or stops (False) waiting on the sandbox."""
        worker.parked = parked
        if not parked:
            return
        # The rest of its claimed batch goes back at once: another worker takes it meanwhile.
        pending, worker.pending = worker.pending, []
        for lease in pending:
            with contextlib.suppress(StoreError):
                self.fence.release(lease.run_id)
        with self._spare_lock:
            if any(not w.parked for w in (*self.workers, *self._spares)):
                return
            if len(self._spares) >= self.settings.spare_workers:
                return
            spare = self._new_worker()
            self._spares.append(spare)
        log.info("spare_worker_started", spares=len(self._spares))
        threading.Thread(target=self._spare_loop, args=(spare,), name="worker-spare", daemon=True).start()

    def _spare_loop(self, spare: Worker) -> None:
        """Serve while some other worker is parked; then stop."""
        try:
            while not self.stopping.is_set():
                with self._spare_lock:
                    others = [w for w in (*self.workers, *self._spares) if w is not spare]
                if not spare.parked and not any(w.parked for w in others):
                    return
                try:
                    busy = self._work_once(spare)
                except StoreError as exc:
                    log.error("store_error", error=str(exc))
                    busy = False
                    self.stopping.wait(1.0)
                if not busy:
                    self.stopping.wait(self.settings.poll_s)
        finally:
            with self._spare_lock:
                self._spares.remove(spare)
            spare.close()

    def _watchdog(self) -> None:
        limit = self.settings.tick_timeout_s
        if limit <= 0:
            return
        for run_id, since in self._busy():
            if time.monotonic() - since > limit:
                # The run's claim ends without a release: it counts towards the poison limit.
                log.error("tick_timeout", run_id=run_id, timeout_s=limit, runner_id=self.settings.runner_id)
                with contextlib.suppress(StoreError):
                    self.fence.mark_stalled([run_id])
                os._exit(70)

    def _work_loop(self, worker: Worker) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    busy = self._work_once(worker)
                except StoreError as exc:  # the db is busy or unavailable: back off, keep serving
                    log.error("store_error", error=str(exc))
                    busy = False
                    self.stopping.wait(1.0)
                if not busy:
                    self.stopping.wait(self.settings.poll_s)
        finally:
            worker.close()

    def _work_once(self, worker: Worker) -> bool:
        if not self.fence.work_waiting():
            return False
        dispatch_pending_events(self.db)
        leases = self.fence.claim(self.settings.claim_batch)
        for index, lease in enumerate(leases):
            if self.stopping.is_set():
                for rest in leases[index:]:
                    self.fence.release(rest.run_id)
                break
            if self.fence.epoch(lease.run_id) is None:  # given back while this worker was parked
                continue
            worker.pending = leases[index + 1 :]
            log.debug("claimed", run_id=lease.run_id, epoch=lease.epoch)
            try:
                if lease.stalled >= self.settings.poison_claims:
                    log.error("poison_run", run_id=lease.run_id, stalled_claims=lease.stalled)
                    worker.fail_poisoned(lease.run_id, lease.stalled)
                    continue
                worker.process(lease.run_id)
            except StoreError:
                # Give the rest of the batch back: held but never processed, the heartbeat would
                # renew them forever. A release the store missed is sent again by the heartbeat.
                for rest in leases[index + 1 :]:
                    with contextlib.suppress(StoreError):
                        self.fence.release(rest.run_id)
                raise
            finally:
                worker.pending = []
        return bool(leases)


def _version() -> str:
    try:
        return package_version("abstractgateway")
    except Exception:
        return "0+unknown"
