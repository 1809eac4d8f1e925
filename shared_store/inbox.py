"""The durable command inbox: idempotent appends (API side) and outcomes (runner side).

Free of abstractruntime so the API can append; command_store.py adapts it to the runtime's
CommandStore protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import apsw

from . import queries as q
from .codec import decode, encode, utc_now_iso
from .db import Database
from .leases import LeaseHolder
from .postgres.retry import write_unit

COMMAND_STATUSES = ("pending", "applied", "rejected")


@dataclass(frozen=True)
class AppendResult:
    accepted: bool
    duplicate: bool
    seq: int


@dataclass(frozen=True)
class Command:
    seq: int
    command_id: str
    run_id: str
    type: str
    payload: dict[str, Any]
    ts: str
    client_id: str | None
    status: str
    error: str | None
    applied_at: str | None
    request_id: str | None = None  # the X-Request-ID of the API request that appended it


def append_command(
    db: Database,
    *,
    command_id: str,
    run_id: str,
    type: str,
    payload: dict[str, Any],
    client_id: str | None = None,
    ts: str | None = None,
    request_id: str | None = None,
) -> AppendResult:
    """Append a command unless its command_id exists; committed when this returns.

    The same command_id again answers duplicate=True with the original seq and changes nothing."""
    if not command_id:
        raise ValueError("command_id must be non-empty")
    if not run_id:
        raise ValueError("run_id must be non-empty")
    if not type:
        raise ValueError("type must be non-empty")
    if not isinstance(payload, dict):
        raise ValueError("payload must be a JSON object")
    try:
        payload_json = encode(payload)
    except TypeError as exc:
        raise ValueError(f"payload is not JSON: {exc}") from exc
    params = {
        "command_id": command_id,
        "run_id": run_id,
        "type": type,
        "payload": payload_json,
        "ts": ts or utc_now_iso(),
        "client_id": client_id,
        "request_id": request_id,
    }

    def append(conn: apsw.Connection) -> AppendResult:
        row = conn.execute(q.INSERT_COMMAND, params).fetchone()
        if row is None:
            # A new statement: under READ COMMITTED it sees the first one, which ON CONFLICT waited for.
            original: Any = conn.execute(q.COMMAND_SEQ, (command_id,)).fetchone()
            return AppendResult(accepted=False, duplicate=True, seq=int(original[0]))
        if type != "emit_event":  # runners dispatch events; the named run has nothing to apply
            conn.execute(q.WAKE_RUN, {"run_id": run_id, "now": time.time()})
        return AppendResult(accepted=True, duplicate=False, seq=int(row[0]))

    return write_unit(db, append)


def command_from_row(row: tuple[Any, ...]) -> Command:
    seq, command_id, run_id, type_, payload, ts, client_id, status, error, applied_at, request_id = row
    return Command(
        int(seq),
        command_id,
        run_id,
        type_,
        decode(payload),
        ts,
        client_id,
        status,
        error,
        applied_at,
        request_id,
    )


def get_command(db: Database, command_id: str) -> Command | None:
    row = db.query_one(q.COMMAND_BY_ID, (command_id,))
    return None if row is None else command_from_row(row)


def commands_after(db: Database, *, after: int, limit: int = 1000) -> list[Command]:
    return [command_from_row(row) for row in db.query(q.COMMANDS_AFTER, (after, max(1, limit)))]


def pending_commands(db: Database, run_id: str, *, limit: int = 100) -> list[Command]:
    """A run's unapplied commands in seq order (partial index commands_pending)."""
    return [command_from_row(row) for row in db.query(q.PENDING_COMMANDS, (run_id, max(1, limit)))]


def last_command_seq(db: Database) -> int:
    row = db.query_one(q.LAST_COMMAND_SEQ)
    return int(row[0]) if row else 0


def resolve_command(
    db: Database, command: Command, *, status: str, error: str | None = None, fence: LeaseHolder | None = None
) -> bool:
    """Record a command's outcome. With a fence, only the holder of the run's lease may.

    Returns False when the command was already resolved (or the lease is not held)."""
    if status not in ("applied", "rejected"):
        raise ValueError(f"status must be 'applied' or 'rejected', not {status!r}")
    params: dict[str, Any] = {
        "seq": command.seq,
        "status": status,
        "error": error,
        "applied_at": utc_now_iso(),
    }
    sql = q.RESOLVE_COMMAND_UNLEASED
    if fence is not None:
        sql = q.RESOLVE_COMMAND_FENCED
        params.update(owner=fence.owner, epoch=fence.epoch(command.run_id))
    with db.write() as conn:
        conn.execute(sql, params)
        return conn.changes() == 1
