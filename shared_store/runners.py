"""The runners table: each runner process registers, heartbeats and publishes its capabilities."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import queries as q
from .codec import decode, encode
from .db import Database


@dataclass(frozen=True)
class RunnerInfo:
    runner_id: str
    host: str
    pid: int
    version: str
    started_at: str
    heartbeat_at: float
    capabilities: dict[str, Any]


def register_runner(
    db: Database, runner_id: str, *, version: str, capabilities: dict[str, Any] | None = None
) -> None:
    with db.write() as conn:
        conn.execute(
            q.REGISTER_RUNNER,
            {
                "runner_id": runner_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": version,
                "started_at": datetime.now(UTC).isoformat(),
                "heartbeat_at": time.time(),
                "capabilities": encode(capabilities or {}),
            },
        )


def runner_heartbeat(db: Database, runner_id: str, *, metrics: str | None = None) -> None:
    """Mark the runner alive; `metrics` (Prometheus text) is published in the same statement."""
    params = {"runner_id": runner_id, "heartbeat_at": time.time()}
    with db.write() as conn:
        if metrics is None:
            conn.execute(q.RUNNER_HEARTBEAT, params)
        else:
            conn.execute(q.RUNNER_HEARTBEAT_METRICS, {**params, "metrics": metrics})


def runner_stopped(db: Database, runner_id: str) -> None:
    with db.write() as conn:
        conn.execute(q.RUNNER_STOPPED, {"runner_id": runner_id, "stopped_at": datetime.now(UTC).isoformat()})


def live_runners(db: Database, *, within_s: float = 60.0) -> list[RunnerInfo]:
    """Runners that heartbeated within `within_s` seconds and did not announce a stop."""
    rows = db.query(q.LIVE_RUNNERS, (time.time() - within_s,))
    return [RunnerInfo(r[0], r[1], int(r[2]), r[3], r[4], float(r[5]), decode(r[6])) for r in rows]


def inactive_warning(db: Database, *, within_s: float = 30.0) -> str | None:
    """What the original answers a start with (`runner_warning`) when nothing is ticking: None while a
    runner heartbeats, else why an accepted run will wait."""
    if live_runners(db, within_s=within_s):
        return None
    return (
        f"no runner has heartbeated within {within_s:.0f}s: the run is stored and queued, and starts when "
        "a runner does (`abstractgateway runner`)"
    )


def runner_metrics(db: Database, *, within_s: float = 60.0) -> list[tuple[str, str]]:
    """(runner_id, Prometheus text) of the live runners that published metrics."""
    return [(str(r[0]), str(r[1])) for r in db.query(q.RUNNER_METRICS, (time.time() - within_s,))]
