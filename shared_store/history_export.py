"""The original gateway's history document (abstractruntime's RunHistoryBundle v1), over this store.

The original answers `GET /runs/{id}/history_bundle` with abstractruntime's own exporter
(`export_run_history_bundle`): `version`, `root_run_id`, `ledgers` ({run_id: {items: [{cursor, record}],
total, cursor_start, cursor_end, artifacts}}), `timeline`, `resolved_actions`, `session`,
`workflow_snapshot`, `input_data`, `warnings`. Rather than re-derive those meanings, this module runs
the same exporter over read-only views of our stores, so the keys mean exactly what the runtime says.

It imports abstractruntime (which loads its Runtime module too), so the API never imports it: it runs
`python -m shared_store.history_export DB BLOB_DIR RUN_ID < options.json` in a child process, as it
compile-checks uploads, and splices the JSON it prints into its answer.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from abstractruntime.history_bundle import RUN_HISTORY_BUNDLE_VERSION_V1, export_run_history_bundle

from .artifact_store import SqliteArtifactStore
from .backend import connect_store
from .db import Database
from .ledger_store import SqliteLedgerStore
from .run_store import SqliteRunStore


class _ReadOnlyArtifacts(SqliteArtifactStore):
    """The exporter may offload large input_data leaves into new artifacts; a read must write nothing,
    so a store attempt fails and the exporter keeps the value inline (saying so in `warnings`)."""

    def store(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("a history export does not write artifacts")


def _unstarted(run_id: str, detail: str) -> dict[str, Any]:
    """A queued run (no RunState yet): the same keys, nothing recorded."""
    return {
        "version": RUN_HISTORY_BUNDLE_VERSION_V1,
        "generated_at": datetime.now(UTC).isoformat(),
        "detail": detail,
        "root_run_id": run_id,
        "workflow_snapshot": None,
        "input_data": {},
        "ledgers": {
            run_id: {
                "run_id": run_id,
                "total": 0,
                "cursor_start": 1,
                "cursor_end": 0,
                "items": [],
                "artifacts": [],
            }
        },
        "timeline": [],
        "resolved_actions": [],
        "session": None,
        "warnings": [{"code": "run_not_started", "run_id": run_id, "detail": "no runner has started it yet"}],
    }


def runtime_history(
    db: Database,
    blob_dir: Any,
    run_id: str,
    *,
    include_subruns: bool = True,
    include_session: bool = False,
    session_turn_limit: int = 200,
    ledger_mode: str = "tail",
    ledger_max_items: int = 2000,
    detail: str = "full",
) -> dict[str, Any]:
    """abstractruntime's RunHistoryBundle for a run this store knows (the caller checked it exists)."""
    run_store = SqliteRunStore(db)  # unfenced, and only read here
    if run_store.load(run_id) is None:
        return _unstarted(run_id, detail)
    bundle: dict[str, Any] = export_run_history_bundle(
        run_id=run_id,
        run_store=run_store,
        ledger_store=SqliteLedgerStore(db),
        artifact_store=_ReadOnlyArtifacts(db, blob_dir),
        include_subruns=include_subruns,
        include_session=include_session,
        session_turn_limit=session_turn_limit,
        ledger_mode=ledger_mode,
        ledger_max_items=ledger_max_items,
        detail=detail,
    )
    return bundle


def main(argv: list[str]) -> int:
    """argv: DB BLOB_DIR RUN_ID; stdin: the options as JSON; stdout: the document as JSON. DB `-`:
    stdin's first line is the PostgreSQL URL (it holds a password: never on a command line)."""
    db_path, blob_dir, run_id = argv
    given = sys.stdin.buffer.read()
    if db_path == "-":
        url, _, given = given.partition(b"\n")
        db_path = url.decode()
    options = json.loads(given or b"{}")
    db = connect_store(db_path)
    try:
        document = runtime_history(db, blob_dir, run_id, **options)
    finally:
        db.close()
    sys.stdout.buffer.write(json.dumps(document, default=str).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
