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
    "updated_at, output_failed, ledger_len, feed_seq, parent_run_id, expires_at) VALUES (:run_id, "
    ":workflow_id, :status, 'end', :wait_reason, :wait_key, :created_at, :updated_at, 0, 0, 0, "
    ":parent_run_id, :expires_at)"
)
# The ledger_appended trigger advances ledger_len as on any append.
_INSERT_RECORD = (
    "INSERT INTO ledger (run_id, seq, step_status, record) SELECT run_id, ledger_len + 1, 'completed', "
    ":record FROM runs WHERE run_id = :run_id"
)
_INSERT_COMMAND = (
    "INSERT INTO commands (command_id, run_id, type, payload, ts, status) "
    "VALUES (:command_id, :run_id, 'pause', '{}', :ts, 'applied')"
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
    expires_at: float | None = None  # what a ttl run that ended gets (unix seconds)
    parent_run_id: str | None = None
    ledger: int = 0  # synthetic ledger records
    commands: int = 0  # applied commands


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
                        "parent_run_id": run.parent_run_id,
                        "expires_at": run.expires_at,
                    },
                )
                for seq in range(run.ledger):
                    record = {
                        "run_id": run.run_id,
                        "step_id": f"s{seq}",
                        "node_id": "n",
                        "status": "completed",
                    }
                    conn.execute(_INSERT_RECORD, {"run_id": run.run_id, "record": encode(record)})
                for i in range(run.commands):
                    conn.execute(
                        _INSERT_COMMAND,
                        {"command_id": f"seed:{run.run_id}:{i}", "run_id": run.run_id, "ts": run.created_at},
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
