"""abstractruntime's CommandStore protocol over the inbox (idempotent by command_id, global seq)."""

from __future__ import annotations

from abstractruntime.storage.commands import CommandAppendResult, CommandRecord, CommandStore

from . import inbox
from .db import Database


class SqliteCommandStore(CommandStore):  # type: ignore[misc]  # abstractruntime ships no types
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, record: CommandRecord) -> CommandAppendResult:
        result = inbox.append_command(
            self.db,
            command_id=record.command_id,
            run_id=record.run_id,
            type=record.type,
            payload=dict(record.payload or {}),
            client_id=record.client_id,
            ts=record.ts or None,
        )
        return CommandAppendResult(accepted=result.accepted, duplicate=result.duplicate, seq=result.seq)

    def list_after(self, *, after: int, limit: int = 1000) -> tuple[list[CommandRecord], int]:
        commands = inbox.commands_after(self.db, after=after, limit=limit)
        records = [
            CommandRecord(
                command_id=c.command_id,
                run_id=c.run_id,
                type=c.type,
                payload=c.payload,
                ts=c.ts,
                client_id=c.client_id,
                seq=c.seq,
            )
            for c in commands
        ]
        return records, (records[-1].seq if records else after)

    def get_last_seq(self) -> int:
        return inbox.last_command_seq(self.db)
