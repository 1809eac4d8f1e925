"""Durable event delivery, the store's half: an event reaches waiting runs as `deliver_event` commands.

The runner decides what an event is and whom it targets (runner_service/events.py, with
abstractruntime's wait keys); this module finds the waiting runs through the runs_event_waiters
index and appends one command per run with a deterministic id (a retried dispatch appends nothing
twice), in the caller's transaction. One writer per run: no other run's state is ever written here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw

from . import queries as q
from .codec import encode, utc_now_iso
from .db import Database
from .errors import Invalid
from .inbox import Command, command_from_row
from .postgres.retry import write_unit

DELIVER_EVENT = "deliver_event"


@dataclass(frozen=True)
class EventTarget:
    """Who an event reaches: runs waiting on its scoped keys, or on its plain name within the scope."""

    name: str
    scope: str
    scope_id: str
    keys: list[str]


class BadEvent(Invalid):
    """An emit_event whose payload cannot name a wait key."""


def _deliver(
    conn: apsw.Connection,
    *,
    origin: str,
    target: EventTarget,
    envelope: dict[str, Any],
    client_id: str | None,
    request_id: str | None,
) -> list[str]:
    delivered: list[str] = []
    now = time.time()
    plain = {"name": target.name, "scope": target.scope, "scope_id": target.scope_id}
    rows = conn.execute(q.EVENT_WAITER_IDS, (encode(target.keys).decode(),)).fetchall()
    rows += conn.execute(q.EVENT_WAITER_IDS_PLAIN, plain).fetchall()
    waiters = {str(row[0]): str(row[1]) for row in rows}
    for run_id, wait_key in sorted(waiters.items()):
        params = {
            "command_id": f"{origin}>{run_id}",
            "run_id": run_id,
            "type": DELIVER_EVENT,
            "payload": encode({"wait_key": wait_key, "event": envelope}),
            "ts": utc_now_iso(),
            "client_id": client_id,
            "request_id": request_id,
        }
        conn.execute(q.INSERT_COMMAND, params).fetchall()
        conn.execute(q.WAKE_RUN, {"run_id": run_id, "now": now})
        delivered.append(str(run_id))
    return delivered


def deliver_event(
    db: Database,
    *,
    origin: str,
    target: EventTarget,
    envelope: dict[str, Any],
    client_id: str | None = None,
    request_id: str | None = None,
) -> list[str]:
    """Append a deliver_event command to every unpaused run the event reaches (one transaction);
    their run ids."""
    return write_unit(
        db,
        lambda conn: _deliver(
            conn, origin=origin, target=target, envelope=envelope, client_id=client_id, request_id=request_id
        ),
    )


RunScope = Callable[[str], tuple[str | None, str | None]]
# (the emitting command, the run's (session_id, workflow_id)) -> (target, envelope); BadEvent refuses.
Interpret = Callable[[Command, RunScope], tuple[EventTarget, dict[str, Any]]]


def dispatch_pending_events(db: Database, interpret: Interpret, *, limit: int = 100) -> int:
    """Turn pending emit_event commands into deliveries; each gets its outcome in the same transaction.

    Whichever runner's BEGIN IMMEDIATE comes first dispatches a command; the next finds it resolved.
    (PostgreSQL: each dispatch locks the commands it takes and steps over those another holds.)"""

    def dispatch(conn: apsw.Connection) -> int:
        def scope_of(run_id: str) -> tuple[str | None, str | None]:
            row = conn.execute(q.RUN_SCOPE, (run_id,)).fetchone()
            return (row[0], row[1]) if row else (None, None)

        commands = [command_from_row(row) for row in conn.execute(q.PENDING_EVENTS, (limit,)).fetchall()]
        for command in commands:
            status, error = "applied", None
            try:
                target, envelope = interpret(command, scope_of)
                _deliver(
                    conn,
                    origin=command.command_id,
                    target=target,
                    envelope=envelope,
                    client_id=command.client_id,
                    request_id=command.request_id,
                )
            except BadEvent as exc:
                status, error = "rejected", str(exc)
            conn.execute(
                q.RESOLVE_COMMAND_UNLEASED,
                {"seq": command.seq, "status": status, "error": error, "applied_at": utc_now_iso()},
            )
        return len(commands)

    return write_unit(db, dispatch)
