"""The runner's maintenance thread: work that belongs to no run — expanding bulk commands (and, as
configured, webhook deliveries and retention) — beside the worker threads, in bounded batches.

Several runners may run it at once: every batch is its own write transaction that re-reads what it
works on, so two runners never do the same batch twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from shared_store import Database, StoreError
from shared_store.bulk_ops import expand_some

log = structlog.get_logger("runner")

Job = Callable[[], int]


class Maintenance:
    def __init__(
        self,
        db: Database,
        stopping: threading.Event,
        *,
        idle_s: float = 0.1,
        jobs: list[tuple[str, Job]] | None = None,
    ) -> None:
        self.db = db
        self.stopping = stopping
        self.idle_s = idle_s
        self.jobs: list[tuple[str, Job]] = (
            jobs if jobs is not None else [("bulk_expand", lambda: expand_some(db))]
        )

    def add(self, name: str, job: Job) -> None:
        self.jobs.append((name, job))

    def loop(self) -> None:
        while not self.stopping.is_set():
            busy = False
            for name, job in self.jobs:
                if self.stopping.is_set():
                    return
                try:
                    done = job()
                except StoreError as exc:  # busy or unavailable now: the next pass retries
                    log.error("maintenance_failed", job=name, error=str(exc))
                    done = 0
                except Exception as exc:  # a bug in one job must not stop the others (or the runner)
                    log.exception("maintenance_error", job=name, error=f"{type(exc).__name__}: {exc}")
                    done = 0
                if done:
                    log.debug("maintenance", job=name, done=done)
                busy = busy or bool(done)
            if not busy:
                self.stopping.wait(self.idle_s)
