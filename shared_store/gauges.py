"""Deployment gauges the API's /metrics reads from the db at scrape time (each an index probe), so
every API process answers the same numbers whichever one is scraped."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import queries as q
from .db import Database


@dataclass(frozen=True)
class DeploymentGauges:
    runs_queued: int  # started, not yet picked up by a runner
    runs_due: int  # due now and waiting for a runner to claim them (the queue depth)
    runs_leased: int  # held by a runner right now
    commands_pending: int  # appended, not yet applied or rejected
    runners_live: int  # heartbeated within the window
    feed_head: int  # the change feed's position


def deployment_gauges(db: Database, *, runner_window_s: float = 30.0) -> DeploymentGauges:
    now = time.time()
    row = db.query_one(q.DEPLOYMENT_GAUGES, {"now": now, "since": now - runner_window_s})
    values = [int(v or 0) for v in row] if row else [0] * 6
    return DeploymentGauges(*values)
