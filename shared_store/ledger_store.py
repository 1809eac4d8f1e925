"""abstractruntime's LedgerStore on the ledger table: dense per-run seq, fenced appends."""

from __future__ import annotations

import builtins
from typing import Any

from abstractruntime.core.models import StepRecord
from abstractruntime.storage.base import LedgerStore

from . import queries as q
from .codec import decode, encode
from .db import Database
from .errors import LeaseLost, UnknownRun
from .leases import LeaseHolder
from .limits import OutputTooLarge, check_output
from .reads import ledger_len, ledger_page
from .run_unit import RunUnit

# A failure record quotes its error up to this many characters (a traceback, a limit message).
MAX_FAILURE_ERROR_CHARS = 4_000


class SqliteLedgerStore(LedgerStore):  # type: ignore[misc]  # abstractruntime ships no types
    """Append-only journal. Bound to a LeaseHolder, an append checks the lease in its statement."""

    def __init__(
        self,
        db: Database,
        *,
        fence: LeaseHolder | None = None,
        max_output_bytes: int | None = None,
        unit: RunUnit | None = None,
    ) -> None:
        self.db = db
        self.fence = fence
        # A record over this (its result named when that is what is over) raises OutputTooLarge,
        # unwritten (None: no cap).
        self.max_output_bytes = max_output_bytes
        # The runner's unit of work: appends are staged and commit with the run's next save (or
        # the unit's flush), in one fenced transaction. None: each append is its own transaction.
        self.unit = unit

    def append(self, record: StepRecord) -> None:
        self._append(record, capped=True)

    def append_failure(self, record: StepRecord) -> None:
        """The gateway's own failure record: its error is bounded here (MAX_FAILURE_ERROR_CHARS), so
        the output cap does not apply — a run failed for an oversized output, or under a cap smaller
        than any record, must still say why, and a refused record must not kill the worker."""
        if record.error and len(record.error) > MAX_FAILURE_ERROR_CHARS:
            record.error = record.error[:MAX_FAILURE_ERROR_CHARS] + " ... (truncated)"
        self._append(record, capped=False)

    def _append(self, record: StepRecord, *, capped: bool) -> None:
        run_id = record.run_id
        if not run_id:
            raise ValueError("StepRecord.run_id must be non-empty")
        params: dict[str, Any] = {
            "run_id": run_id,
            "step_status": record.status.value,
            "idempotency_key": record.idempotency_key or None,
            "record": encode(record),
        }
        cap = self.max_output_bytes if capped else None
        if cap is not None and len(params["record"]) > cap:
            # abstractruntime appends a run's closing record (the output inside) before the save that
            # completes it, and swallows this error there (logged): the save then raises it again,
            # so the oversized output lands in neither. An effect's record raises out of the tick.
            check_output(f"the result of node {record.node_id!r}", record.result, cap)
            # An effect's payload (an answer_user message, an LLM prompt) is in its STARTED record.
            raise OutputTooLarge(f"a ledger record of node {record.node_id!r}", len(params["record"]), cap)
        if self.unit is not None:
            self.unit.stage_record(run_id, params)
            return
        if self.fence is None:
            sql = q.APPEND_LEDGER_UNLEASED
        else:
            sql = q.APPEND_LEDGER_FENCED
            params.update(self.fence.params(run_id))
        if self.db.execute_write(sql, params) == 1:
            return
        if ledger_len(self.db, run_id) is None:
            raise UnknownRun(run_id)
        raise self.fence.lost(run_id) if self.fence else LeaseLost(run_id, None, None)

    def _staged(self, run_id: str) -> list[dict[str, Any]]:
        """The run's records the unit stages (reads see them; they commit with the next save)."""
        return self.unit.staged_records(run_id) if self.unit is not None else []

    def list(self, run_id: str) -> list[dict[str, Any]]:
        stored = [decode(row[0]) for row in self.db.query(q.LIST_LEDGER, (run_id,))]
        return stored + [decode(params["record"]) for params in self._staged(run_id)]

    # `list` is a method of this class from here on: annotations below name the builtin explicitly.
    def list_after(
        self, *, run_id: str, after: int, limit: int = 1000
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """Cursor read: records after `after` (records consumed so far) and the next cursor."""
        page = ledger_page(self.db, run_id, after=after, limit=limit)
        records = [decode(record) for record in page.records]
        staged = self._staged(run_id)
        if staged and len(records) < limit:  # the page reached the stored end: staged ones follow
            stored = ledger_len(self.db, run_id) or 0
            extra = [decode(p["record"]) for p in staged[max(0, after - stored) :]][: limit - len(records)]
            return records + extra, max(after, stored) + len(extra) if extra else page.next_after
        return records, page.next_after

    def find_completed_result(self, run_id: str, idempotency_key: str) -> dict[str, Any] | None:
        """Indexed point query (ledger_idempotency) instead of a scan of the ledger tail."""
        if not idempotency_key:
            return None
        for params in reversed(self._staged(run_id)):
            if params["idempotency_key"] == idempotency_key and params["step_status"] == "completed":
                result: dict[str, Any] | None = decode(params["record"]).get("result")
                return result
        row = self.db.query_one(q.FIND_COMPLETED_RESULT, (run_id, idempotency_key))
        return None if row is None else decode(row[0]).get("result")

    def count(self, run_id: str) -> int:
        return (ledger_len(self.db, run_id) or 0) + len(self._staged(run_id))
