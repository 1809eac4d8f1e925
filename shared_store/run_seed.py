"""Synthetic finished runs written straight into the tables, for benchmarks and tests at scale
(100,000 runs in seconds, where starting them through a runner would take an hour)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .codec import encode
from .db import Database
from .run_labels import Labels, write_labels

_INSERT_RUN = (
    "INSERT INTO runs (run_id, workflow_id, status, current_node, wait_reason, wait_key, created_at, "
    "updated_at, output_failed, ledger_len, feed_seq) VALUES (:run_id, :workflow_id, :status, 'end', "
    ":wait_reason, :wait_key, :created_at, :updated_at, 0, 0, 0)"
)
_INSERT_STATE = "INSERT INTO run_states (run_id, run_json) VALUES (:run_id, :run_json)"


@dataclass(frozen=True)
class SeedRun:
    run_id: str
    workflow_id: str
    status: str  # a stored status
    created_at: str
    updated_at: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    ttl_s: float | None = None


def seed_runs(db: Database, runs: Iterable[SeedRun], *, batch: int = 5_000) -> int:
    """Insert the runs (with their state document and labels), `batch` per transaction."""
    written = 0
    pending: list[SeedRun] = []

    def flush() -> None:
        with db.write() as conn:
            for run in pending:
                waiting = run.status == "waiting"
                conn.execute(
                    _INSERT_RUN,
                    {
                        "run_id": run.run_id,
                        "workflow_id": run.workflow_id,
                        "status": run.status,
                        "wait_reason": "user" if waiting else None,
                        "wait_key": f"ask:{run.run_id}" if waiting else None,
                        "created_at": run.created_at,
                        "updated_at": run.updated_at,
                    },
                )
                document = {
                    "run_id": run.run_id,
                    "workflow_id": run.workflow_id,
                    "status": run.status,
                    "vars": {},
                    "output": run.output,
                    "error": "seeded failure" if run.status == "failed" else None,
                    "waiting": {"reason": "user", "wait_key": f"ask:{run.run_id}", "prompt": "ok?"}
                    if waiting
                    else None,
                }
                conn.execute(_INSERT_STATE, {"run_id": run.run_id, "run_json": encode(document)})
                write_labels(
                    conn,
                    run.run_id,
                    run.created_at,
                    Labels(tags=run.tags, metadata=run.metadata or None, ttl_s=run.ttl_s),
                )
        pending.clear()

    for run in runs:
        pending.append(run)
        written += 1
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return written
