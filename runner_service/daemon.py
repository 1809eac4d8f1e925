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
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import structlog

from shared_store import Database, LeaseHolder, StoreError
from shared_store import queries as q
from shared_store.bundles import get_bundle, import_flows_dir, list_bundles, record_check
from shared_store.runners import register_runner, runner_heartbeat, runner_stopped

from .bundle_host import BundleHost
from .events import dispatch_pending_events
from .metrics import RunnerMetrics
from .worker import Worker, WorkerSettings

log = structlog.get_logger("runner")


@dataclass
class RunnerSettings:
    db_path: Path
    artifacts_dir: Path
    flows_dir: Path | None = None
    runner_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    lease_s: float = 30.0
    poll_s: float = 0.05
    workers: int = 1
    claim_batch: int = 4
    labels: list[str] = field(default_factory=list)  # claims take only runs whose requirements these meet


class Runner:
    def __init__(self, settings: RunnerSettings, *, effect_handlers: Any = None) -> None:
        self.settings = settings
        self.db = Database(settings.db_path)
        self.fence = LeaseHolder(
            self.db, settings.runner_id, lease_s=settings.lease_s, labels=settings.labels
        )
        self.stopping = threading.Event()
        self.metrics = RunnerMetrics(self.fence)
        worker_settings = WorkerSettings(artifacts_dir=settings.artifacts_dir)
        self.workers = [
            Worker(
                self.db,
                self.fence,
                worker_settings,
                stopping=self.stopping,
                effect_handlers=effect_handlers,
                metrics=self.metrics,
            )
            for _ in range(max(1, settings.workers))
        ]

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
        threads = [
            threading.Thread(target=self._work_loop, args=(worker,), name=f"worker-{i}")
            for i, worker in enumerate(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            released = self.fence.release_all()
            runner_stopped(self.db, self.settings.runner_id)
        except StoreError as exc:  # a full disk, say: the leases left behind expire after lease_s
            log.error("runner_stop_incomplete", runner_id=self.settings.runner_id, error=str(exc))
            self.db.close()
            return 1
        log.info("runner_stopped", runner_id=self.settings.runner_id, released=released)
        self.db.close()
        return 0

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

    # --- loops ---------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        # Leases need a renewal every lease_s / 3; the published metrics at least every 5 s.
        interval = max(0.05, min(self.settings.lease_s / 3, 5.0))
        while not self.stopping.wait(interval):
            try:
                for lease in self.fence.heartbeat():
                    log.warning("lease_lost", run_id=lease.run_id, epoch=lease.epoch)
                runner_heartbeat(self.db, self.settings.runner_id, metrics=self.metrics.text())
            except StoreError as exc:
                log.error("heartbeat_failed", error=str(exc))

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
        row = self.db.query_one(q.WORK_PROBE, {"now": time.time(), "labels": self.fence.labels_json})
        if not (row and row[0]):
            return False
        dispatch_pending_events(self.db)
        leases = self.fence.claim(self.settings.claim_batch)
        for index, lease in enumerate(leases):
            if self.stopping.is_set():
                for rest in leases[index:]:
                    self.fence.release(rest.run_id)
                break
            log.debug("claimed", run_id=lease.run_id, epoch=lease.epoch)
            try:
                worker.process(lease.run_id)
            except StoreError:
                # Give the rest of the batch back: held but never processed, the heartbeat would
                # renew them forever. A release that fails too is forgotten: its lease expires.
                for rest in leases[index + 1 :]:
                    with contextlib.suppress(StoreError):
                        self.fence.release(rest.run_id)
                raise
        return bool(leases)


def _version() -> str:
    try:
        return package_version("abstractgateway")
    except Exception:
        return "0+unknown"
