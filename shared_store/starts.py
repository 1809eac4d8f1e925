"""Queued starts: the API writes a run to start (durably, in one short transaction); a runner claims it.

The runs row is born `queued` and due now; run_states.start_json holds the request. The runner that
claims it calls Runtime.start with this run_id, which fills the row (RunStore.create_if_absent).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import apsw

from . import queries as q
from .bundles import ResolvedWorkflow
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Conflict, StoreBusy
from .flow_control import FlowSettings, apply_at_enqueue
from .ids import new_run_id
from .postgres.retry import write_unit
from .run_labels import Labels, write_labels

# The actor the original gateway records on the runs it starts (RunState.actor_id, each ledger record).
GATEWAY_ACTOR = "gateway"


class IdempotencyConflict(Conflict):
    """The Idempotency-Key was used before for a different request."""


@dataclass(frozen=True)
class StartResult:
    run_id: str
    created: bool


def enqueue_run(
    db: Database,
    *,
    resolved: ResolvedWorkflow,
    input_data: dict[str, Any],
    session_id: str | None = None,
    parent_run_id: str | None = None,
    idempotency_key: str | None = None,
    labels: Labels | None = None,
    request_id: str | None = None,
    flow: FlowSettings | None = None,
) -> StartResult:
    """Commit a queued run; the same idempotency_key with the same request answers the same run.

    labels: tags, metadata, rerun link, ttl and webhook target, written in the same transaction.
    `request_id` (the API request's X-Request-ID) rides in the start request for the runner's log
    lines; it is not part of what the idempotency key compares. `flow`: its priority, concurrency
    key and required labels; KeyFull (409) when the key is full and its overflow policy is reject:
    then nothing is written."""
    start = {
        "workflow_id": resolved.workflow_id,
        "bundle_id": resolved.bundle_id,
        "bundle_version": resolved.bundle_version,
        "flow_id": resolved.flow_id,
        "input_data": input_data,
        "session_id": session_id,
        "parent_run_id": parent_run_id,
    }
    if labels is not None and not labels.is_empty():  # part of the request an Idempotency-Key covers
        start["labels"] = {k: v for k, v in vars(labels).items() if v not in (None, ())}
    if flow is not None and not flow.empty:
        start["flow"] = {**flow.request.to_json(), "concurrency_key": flow.concurrency_key}
    start_json = encode({**start, "request_id": request_id} if request_id else start)
    # What an Idempotency-Key compares (the request, not its request_id): digested only with a key.
    request_sha = None if idempotency_key is None else hashlib.sha256(encode(start)).hexdigest()
    run_id = new_run_id()
    params: dict[str, Any] = {
        "run_id": run_id,
        "workflow_id": resolved.workflow_id,
        # As the original: a run started without a session is its own session (session-scoped events
        # address it by its run_id). The request (and its idempotency digest) keeps what was sent.
        "session_id": session_id or run_id,
        "parent_run_id": parent_run_id,
        "created_at": utc_now_iso(),
        "now": time.time(),
        "start_json": start_json,
    }
    key_params = {
        "idempotency_key": idempotency_key,
        "run_id": run_id,
        "request_sha256": request_sha,
        "created_at": params["created_at"],
    }

    def enqueue(conn: apsw.Connection) -> StartResult:
        if idempotency_key is not None:
            existing = bind_start_key(conn, idempotency_key, key_params)
            if existing is not None:
                if existing[1] != request_sha:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used for a different start request; use a new key"
                    )
                return StartResult(str(existing[0]), created=False)
        conn.execute(q.ENQUEUE_RUN, params)
        conn.execute(q.ENQUEUE_RUN_STATE, params)
        if labels is not None:
            write_labels(conn, run_id, params["created_at"], labels)
        if flow is not None:
            apply_at_enqueue(conn, run_id, flow, now=params["now"])
        return StartResult(run_id, created=True)

    return write_unit(db, enqueue)


def bind_start_key(conn: apsw.Connection, key: str, key_params: dict[str, Any]) -> tuple[Any, ...] | None:
    """Bind the Idempotency-Key to this start; None when it is now ours, else the (run_id, digest) of
    the start that holds it (a duplicate, concurrent or not: one run per key, never an error)."""
    for _ in range(3):
        if conn.execute(q.INSERT_START_KEY, key_params).fetchone() is not None:
            return None
        # A new statement: under READ COMMITTED it sees the winner that ON CONFLICT waited for.
        row: tuple[Any, ...] | None = conn.execute(q.START_KEY, (key,)).fetchone()
        if row is not None:
            return row
        # The winner's key row went (retention deleted its run) between the two statements: bind again.
    raise StoreBusy(f"Idempotency-Key {key!r} kept changing hands; try again")


def start_request(db: Database, run_id: str) -> dict[str, Any] | None:
    """What a queued (or since started) run was asked to start with; None when not started this way."""
    row = db.query_one(q.START_REQUEST, (run_id,))
    return None if row is None or row[0] is None else decode(row[0])
