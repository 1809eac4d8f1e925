"""Import a data dir of the file backend (abstractruntime's JSON/JSONL stores) into the db.

The layout the original gateway wrote in one folder (its `build_file_stores`):

    run_<run_id>.json          RunState, one JSON document per run (JsonFileRunStore)
    ledger_<run_id>.jsonl      StepRecords, one JSON object per line, append order (JsonlLedgerStore)
    commands.jsonl             the command inbox, one record per line with a store seq (JsonlCommandStore)
    commands_cursor.json       {"cursor": N}: the runner had processed commands with seq <= N
    artifacts/refs/<id>.meta   ArtifactMetadata JSON, pointing at blobs/<blob_id>.bin (FileArtifactStore)
    artifacts/<id>.meta|.bin   the legacy artifact layout, still read by FileArtifactStore

Everything else there (`.runs_created.log`, scan caches, `artifact_catalog.sqlite3`) is derived and
ignored. A re-run adds nothing: inserts skip rows already present, and a run already imported only
takes the ledger tail and state the file gateway wrote since (when the db's copy has not moved on).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import apsw
import msgspec
from abstractruntime.core.models import RunState

from . import queries as q
from .blob_store import blobs_for
from .codec import decode, encode
from .db import Database
from .file_import_artifacts import blob_intact, import_artifacts
from .run_store import awaited_child, decode_run, iso_to_epoch, run_columns


class Progress(Protocol):
    def update(self, n_steps: int) -> None: ...


# Given the number of runs, a context manager whose update(1) is called per run (click.progressbar).
ProgressFactory = Callable[[int], AbstractContextManager[Progress]]


@dataclass
class ImportSummary:
    runs_found: int = 0
    runs_imported: int = 0
    runs_updated: int = 0
    runs_unchanged: int = 0
    ledger_records: int = 0  # appended by this import
    commands_found: int = 0
    commands_imported: int = 0
    artifacts_found: int = 0
    artifacts_imported: int = 0
    skipped: list[str] = field(default_factory=list)  # "<file>[ line N]: reason": corrupt input, left out
    kept: list[str] = field(default_factory=list)  # runs changed in the db since: left as the db has them
    verified: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (in files, in db)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def lines(self) -> list[str]:
        out = [
            f"runs: {self.runs_found} found, {self.runs_imported} imported, {self.runs_updated} updated, "
            f"{self.runs_unchanged} unchanged",
            f"ledger records: {self.ledger_records} imported",
            f"commands: {self.commands_found} found, {self.commands_imported} imported",
            f"artifacts: {self.artifacts_found} found, {self.artifacts_imported} imported",
        ]
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} corrupt or unreadable:")
            out += [f"  {item}" for item in self.skipped]
        if self.kept:
            out.append(f"kept {len(self.kept)} runs as the db has them (changed there since the import):")
            out += [f"  {item}" for item in self.kept]
        counts = ", ".join(f"{kind} {db}/{files}" for kind, (files, db) in self.verified.items())
        if self.ok:
            out.append(f"verify: counts match (db/files: {counts})")
        else:
            out.append(f"verify: MISMATCH (db/files: {counts})")
            out += [f"  {item}" for item in self.mismatches]
        return out


@dataclass
class _RunFile:
    run: RunState
    records: list[dict[str, Any]]


def import_file_store(
    db: Database,
    source_dir: str | os.PathLike[str],
    *,
    artifacts_dir: str | os.PathLike[str],
    progress: ProgressFactory | None = None,
) -> ImportSummary:
    """Import runs, ledgers, commands and artifacts from source_dir; verify the counts after."""
    source = Path(source_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory")
    summary = ImportSummary()
    # Artifacts first (a run's state may point at offloaded values), then commands (a run inserted
    # after its pending commands is born due), then runs.
    artifact_ids, summary.artifacts_imported = import_artifacts(
        db, source, Path(artifacts_dir), summary.skipped
    )
    summary.artifacts_found = len(artifact_ids)
    command_ids = _import_commands(db, source, summary)
    expected = _import_runs(db, source, summary, progress)
    _verify(db, summary, expected, command_ids, artifact_ids, Path(artifacts_dir))
    return summary


# --- runs and ledgers ------------------------------------------------------------------------------
def _import_runs(
    db: Database, source: Path, summary: ImportSummary, progress: ProgressFactory | None
) -> dict[str, int]:
    """Import every run with its ledger, one transaction each; returns run_id -> ledger records read.

    One run in memory at a time: a file store may hold gigabytes of ledgers."""
    paths = sorted(source.glob("run_*.json"))
    ledger_paths = {p.name[len("ledger_") : -len(".jsonl")]: p for p in source.glob("ledger_*.jsonl")}
    summary.runs_found = len(paths)
    expected: dict[str, int] = {}
    waiting_on: list[tuple[str, str]] = []
    seen: set[str] = set()
    bar: AbstractContextManager[Any] = progress(len(paths)) if progress else nullcontext()
    with bar as tick:
        for path in paths:
            item = _read_run(path, ledger_paths, summary)
            if item is not None:
                run_id = item.run.run_id
                seen.add(run_id)
                outcome, appended = _import_run(db, item)
                summary.ledger_records += appended
                if outcome == "kept":
                    summary.kept.append(run_id)
                else:
                    expected[run_id] = len(item.records)
                    summary.runs_imported += outcome == "imported"
                    summary.runs_updated += outcome == "updated"
                    summary.runs_unchanged += outcome == "unchanged"
                child = awaited_child(item.run)
                if child and outcome in ("imported", "updated"):
                    waiting_on.append((run_id, child))
            if tick is not None:
                tick.update(1)
    now = time.time()
    for run_id, child_id in waiting_on:
        db.execute_write(q.WAKE_IMPORTED_PARENT, {"run_id": run_id, "child_id": child_id, "now": now})
    for run_id, path in sorted(ledger_paths.items()):
        if run_id not in seen:
            summary.skipped.append(f"{path.name}: no readable run_{run_id}.json")
    return expected


def _read_run(path: Path, ledger_paths: dict[str, Path], summary: ImportSummary) -> _RunFile | None:
    name_id = path.name[len("run_") : -len(".json")]
    try:
        run = decode_run(path.read_bytes())
    except (OSError, msgspec.DecodeError, ValueError, TypeError) as exc:
        summary.skipped.append(f"{path.name}: {_reason(exc)}")
        return None
    if run.run_id != name_id:
        summary.skipped.append(f"{path.name}: holds run {run.run_id!r}, not {name_id!r}")
        return None
    ledger = ledger_paths.get(name_id)
    records = _read_ledger(ledger, summary) if ledger is not None else []
    return _RunFile(run, records)


def _read_ledger(path: Path, summary: ImportSummary) -> list[dict[str, Any]]:
    """The file's records in order; a line that is not JSON (a torn write) is reported and left out.

    Like JsonlLedgerStore.list: split on "\\n" only (JSON keeps U+2028 raw), and recover objects that
    a crashed writer concatenated on one line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        summary.skipped.append(f"{path.name}: {_reason(exc)}")
        return []
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = decode(line)
            parsed = [obj] if isinstance(obj, dict) else []
        except msgspec.DecodeError:
            parsed = _recover_concatenated(line)
        if parsed:
            records.extend(parsed)
        else:
            summary.skipped.append(f"{path.name} line {number}: not a JSON record")
    return records


def _recover_concatenated(line: bytes) -> list[dict[str, Any]]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return []
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return []  # trailing garbage: the line is torn, not concatenated
        if not isinstance(obj, dict):
            return []
        out.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def _import_run(db: Database, item: _RunFile) -> tuple[str, int]:
    """(imported | updated | unchanged | kept, records appended): the run row, its state and its
    ledger in one transaction."""
    run, records = item.run, item.records
    params = run_columns(run, time.time())
    with db.write() as conn:
        conn.execute(q.IMPORT_RUN, params)
        if conn.changes() == 1:
            conn.execute(q.SAVE_RUN_STATE, params)
            _append(conn, run.run_id, records)
            return "imported", len(records)
        probe: Any = conn.execute(q.IMPORT_RUN_PROBE, (run.run_id,)).fetchone()
        ledger_len, lease_owner, db_updated = probe
        # The db's ledger must still be a prefix of the file's: a runner here that appended its own
        # records (or saved a newer state) owns the run now, and the file's tail no longer fits.
        if ledger_len > len(records):
            return "kept", 0
        if ledger_len:
            last = conn.execute(q.LEDGER_RECORD_AT, (run.run_id, ledger_len)).fetchone()
            if last is None or decode(last[0]) != records[ledger_len - 1]:
                return "kept", 0
        file_time, db_time = iso_to_epoch(run.updated_at) or 0.0, iso_to_epoch(db_updated) or 0.0
        if ledger_len == len(records) and file_time <= db_time:
            return "unchanged", 0
        if lease_owner is not None or db_time > file_time:
            return "kept", 0
        params.update(born_owner=None, born_expires_at=None, born_epoch=0)
        conn.execute(q.SAVE_RUN_UNLEASED, params)
        conn.execute(q.SAVE_RUN_STATE, params)
        _append(conn, run.run_id, records[ledger_len:])
        return "updated", len(records) - ledger_len


def _append(conn: apsw.Connection, run_id: str, records: list[dict[str, Any]]) -> None:
    # The unleased append gives seq = ledger_len + 1: dense from 1 in file order.
    for record in records:
        conn.execute(
            q.APPEND_LEDGER_UNLEASED,
            {
                "run_id": run_id,
                "step_status": record.get("status"),
                "idempotency_key": record.get("idempotency_key") or None,
                "record": encode(record),
            },
        )


# --- commands ----------------------------------------------------------------------------------------
def _import_commands(db: Database, source: Path, summary: ImportSummary) -> list[str]:
    """Commands the file runner had processed (seq <= its cursor) land applied, the rest pending."""
    path = source / "commands.jsonl"
    if not path.exists():
        return []
    cursor, cursor_at = _read_cursor(source / "commands_cursor.json", summary)
    ids: dict[str, None] = {}  # ordered set
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = decode(raw)
            params = {
                "command_id": str(obj["command_id"]),
                "run_id": str(obj["run_id"]),
                "type": str(obj["type"]),
                "payload": encode(dict(obj.get("payload") or {})),
                "ts": str(obj.get("ts") or ""),
                "client_id": obj.get("client_id") or None,
            }
            seq = int(obj.get("seq") or 0)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            summary.skipped.append(f"{path.name} line {number}: not a command record")
            continue
        if not (params["command_id"] and params["run_id"] and params["type"]) or params["command_id"] in ids:
            continue  # the file store ignores these too (duplicates are idempotent re-submissions)
        ids[str(params["command_id"])] = None
        done = 0 < seq <= cursor
        # The file store kept no outcome; "applied" says only that its runner got past it.
        params.update(status="applied" if done else "pending", applied_at=cursor_at if done else None)
        with db.write() as conn:
            conn.execute(q.IMPORT_COMMAND, params)
            if conn.changes() == 1:
                summary.commands_imported += 1
                if not done and params["type"] != "emit_event":
                    conn.execute(q.WAKE_RUN, {"run_id": params["run_id"], "now": time.time()})
    summary.commands_found = len(ids)
    return list(ids)


def _read_cursor(path: Path, summary: ImportSummary) -> tuple[int, str | None]:
    if not path.exists():
        return 0, None
    try:
        data = decode(path.read_bytes())
        return int(data.get("cursor") or 0), data.get("updated_at")
    except (OSError, msgspec.DecodeError, AttributeError, TypeError, ValueError) as exc:
        # Unknown progress: every command is pending, as JsonFileCommandCursorStore reads such a file
        # (the file runner would have replayed them all too).
        summary.skipped.append(f"{path.name}: {_reason(exc)}")
        return 0, None


# --- verification ------------------------------------------------------------------------------------
def _verify(
    db: Database,
    summary: ImportSummary,
    expected: dict[str, int],
    command_ids: list[str],
    artifacts: dict[str, str],
    blob_dir: Path,
) -> None:
    """Counts in the db against counts read from the files, per kind (runs kept as the db has them
    are left out: their db copy moved on on purpose)."""
    lens = dict(db.query(q.IMPORTED_LEDGER_COUNTS, (json.dumps(list(expected)),)))
    summary.verified["runs"] = (len(expected), len(lens))
    summary.verified["ledger records"] = (sum(expected.values()), sum(lens.values()))
    for run_id, count in expected.items():
        if run_id not in lens:
            summary.mismatches.append(f"run {run_id}: not in the db")
        elif lens[run_id] != count:
            summary.mismatches.append(
                f"run {run_id}: {lens[run_id]} ledger records in the db, {count} in the file"
            )
    row = db.query_one(q.IMPORTED_COMMANDS, (json.dumps(command_ids),))
    in_db = int(row[0]) if row else 0
    summary.verified["commands"] = (len(command_ids), in_db)
    if in_db != len(command_ids):
        summary.mismatches.append(f"commands: {in_db} in the db, {len(command_ids)} in the file")
    rows = db.query(q.IMPORTED_ARTIFACTS, (json.dumps(list(artifacts)),))
    blobs = blobs_for(db, blob_dir)
    intact = [
        artifact_id
        for artifact_id, blob_id, size in rows
        if blob_id == artifacts[artifact_id] and blob_intact(blob_dir, blob_id, size, blobs)
    ]
    summary.verified["artifacts"] = (len(artifacts), len(intact))
    for artifact_id in sorted(set(artifacts) - set(intact)):
        summary.mismatches.append(f"artifact {artifact_id}: missing in the db or its blob")
    if not summary.ok:
        summary.mismatches.sort()


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
