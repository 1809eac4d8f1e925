"""Bulk commands: one durable operation (a filter + a command type) that runners expand into ordinary
commands, a bounded batch per transaction, so a bulk cancel of 100,000 runs never holds the write
lock for long and survives any process dying half way (the keyset position is stored with each batch).

Each expanded command is `bulk:<bulk_id>:<run_id>` (idempotent: an expansion replayed after a crash
inserts nothing twice), applied by whichever runner holds the run, like any command. Counts come from
those commands' outcomes through the unique command_id index (a range of ids), never a scan.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from . import queries as q
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Conflict
from .run_filter import RunFilter
from .run_list import page_sql

BULK_TYPES = ("cancel", "pause", "resume")
BULK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
BATCH = 200  # commands per expansion transaction (~5 ms of write lock, measured on 2 cores)

INSERT_BULK = (
    "INSERT INTO bulk_ops (bulk_id, type, filter, payload, request_sha256, created_at, updated_at) "
    "VALUES (:bulk_id, :type, :filter, :payload, :request_sha256, :created_at, :created_at) "
    "ON CONFLICT(bulk_id) DO NOTHING"
)
BULK_OF = (
    "SELECT bulk_id, type, filter, payload, request_sha256, status, matched, cursor_created, cursor_run_id, "
    "created_at, updated_at FROM bulk_ops WHERE bulk_id = ?"
)
NEXT_EXPANDING = (
    "SELECT bulk_id FROM bulk_ops INDEXED BY bulk_ops_expanding WHERE status = 'expanding' "
    "ORDER BY created_at LIMIT 1"
)
# The same, as the first statement of an expansion: its PostgreSQL twin locks the operation (SKIP
# LOCKED), so two runners never expand the same batch (each would add it to `matched`).
TAKE_EXPANDING = (
    "SELECT bulk_id FROM bulk_ops INDEXED BY bulk_ops_expanding WHERE status = 'expanding' "
    "ORDER BY created_at, bulk_id LIMIT 1"
)
ADVANCE_BULK = (
    "UPDATE bulk_ops SET matched = matched + :n, cursor_created = :cursor_created, "
    "cursor_run_id = :cursor_run_id, status = :status, updated_at = :updated_at "
    "WHERE bulk_id = :bulk_id AND status = 'expanding'"
)
# Derived commands (`<id>><child>`, pause/cancel reaching descendants) are not the operation's own.
BULK_OUTCOMES = (
    "SELECT status, count(*) FROM commands WHERE command_id >= :lo AND command_id < :hi "
    "AND instr(command_id, '>') = 0 GROUP BY status"
)


class BulkConflict(Conflict):
    """The bulk_id was used for a different operation."""


@dataclass(frozen=True)
class BulkOp:
    bulk_id: str
    type: str
    filter: RunFilter
    payload: dict[str, Any]
    status: str  # expanding | expanded
    matched: int
    created_at: str
    updated_at: str
    request_sha256: str
    cursor: tuple[str, str] | None


def _op(row: tuple[Any, ...]) -> BulkOp:
    bulk_id, type_, filter_json, payload, sha, status, matched, c_created, c_run, created, updated = row
    return BulkOp(
        bulk_id, type_, RunFilter.from_json(filter_json), decode(payload), status, int(matched), created,
        updated, sha, None if c_created is None else (c_created, c_run),
    )  # fmt: skip


def create_bulk(
    db: Database, *, bulk_id: str, type: str, run_filter: RunFilter, payload: dict[str, Any]
) -> tuple[BulkOp, bool]:
    """Store the operation (committed when this returns); (op, created). The same bulk_id with the
    same request answers the stored op; with another request, BulkConflict."""
    if not BULK_ID.match(bulk_id):
        raise ValueError("bulk_id: 1 to 128 of A-Z a-z 0-9 _ . -")
    if type not in BULK_TYPES:
        raise ValueError(f"type must be one of {', '.join(BULK_TYPES)}")
    filter_json = run_filter.to_json()
    payload_json = encode(payload)
    sha = hashlib.sha256(encode([type, decode(filter_json), payload])).hexdigest()
    params = {
        "bulk_id": bulk_id,
        "type": type,
        "filter": filter_json,
        "payload": payload_json,
        "request_sha256": sha,
        "created_at": utc_now_iso(),
    }
    with db.write() as conn:
        conn.execute(INSERT_BULK, params)
        created = conn.changes() == 1
        created_row: Any = conn.execute(BULK_OF, (bulk_id,)).fetchone()
        op = _op(created_row)
    if not created and op.request_sha256 != sha:
        raise BulkConflict(f"bulk_id {bulk_id!r} was used for a different operation; use a new bulk_id")
    return op, created


def get_bulk(db: Database, bulk_id: str) -> BulkOp | None:
    row = db.query_one(BULK_OF, (bulk_id,))
    return None if row is None else _op(row)


def bulk_counts(db: Database, bulk_id: str) -> dict[str, int]:
    """Outcomes of the operation's commands so far: pending, applied, rejected."""
    counts = {"pending": 0, "applied": 0, "rejected": 0}
    for status, n in db.query(BULK_OUTCOMES, {"lo": f"bulk:{bulk_id}:", "hi": f"bulk:{bulk_id};"}):
        counts[status] = int(n)
    return counts


def expand_some(db: Database, *, batch: int = BATCH) -> int:
    """Expand one batch of the oldest unfinished operation into commands; the commands written (0:
    nothing to do). Safe with several runners: each batch is one write transaction."""
    if db.query_one(NEXT_EXPANDING) is None:  # the idle case: one read, no write lock
        return 0
    with db.write() as conn:
        row = conn.execute(TAKE_EXPANDING).fetchone()
        if row is None:
            return 0
        op_row: Any = conn.execute(BULK_OF, (row[0],)).fetchone()
        op = _op(op_row)
        # Runs created after the operation are not its own.
        before = op.filter.created_before
        bound = op.created_at if before is None else min(before, op.created_at)
        params: dict[str, Any] = {"limit": batch}
        sql = page_sql(
            replace(op.filter, created_before=bound),
            params,
            cursor=op.cursor,
            offset=0,
            columns="r.run_id, r.created_at",
            created_pos=2,
        )
        runs = conn.execute(sql, params).fetchall()
        ts, now = utc_now_iso(), time.time()
        payload = encode(op.payload)
        for run_id, _ in runs:
            command = {
                "command_id": f"bulk:{op.bulk_id}:{run_id}",
                "run_id": run_id,
                "type": op.type,
                "payload": payload,
                "ts": ts,
                "client_id": f"bulk:{op.bulk_id}",
                "request_id": None,
            }
            if conn.execute(q.INSERT_COMMAND, command).fetchone() is not None:
                conn.execute(q.WAKE_RUN, {"run_id": run_id, "now": now})
        last = runs[-1] if runs else (None, None)
        conn.execute(
            ADVANCE_BULK,
            {
                "bulk_id": op.bulk_id,
                "n": len(runs),
                "cursor_created": last[1] if runs else (op.cursor[0] if op.cursor else None),
                "cursor_run_id": last[0] if runs else (op.cursor[1] if op.cursor else None),
                "status": "expanding" if len(runs) == batch else "expanded",
                "updated_at": ts,
            },
        )
    return len(runs)
