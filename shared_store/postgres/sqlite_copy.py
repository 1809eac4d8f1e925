"""`abstractgateway migrate --from=sqlite --db-url postgresql://...`: copy a SQLite gateway into a
migrated PostgreSQL database, so an operator moves up without losing a run.

- One read snapshot of the SQLite file for the whole copy (a deferred BEGIN held to the end): every
  table is copied as of the same instant, and the counts checked at the end are that instant's.
  Stop the gateway first anyway: rows written to SQLite after the snapshot are not copied.
- Idempotent: rows go in with `INSERT ... ON CONFLICT DO NOTHING`, so running it again (after a
  failure half-way, or twice by mistake) adds only what is missing and changes nothing copied. Never an
  upsert: an UPDATE of runs.status would fire the webhook, expiry and parent wake-up triggers again.
- Table order: the schema has no foreign keys; what orders the copy are the triggers. Inserting a
  ledger record moves its run's ledger_len and feed position, inserting a cancel command un-holds its
  run: those tables go BEFORE runs, so their triggers find no run yet and every copied run row keeps
  the values SQLite had. (Inserting a run recomputes claim_order from status / fair_tag / due_at, the
  same function SQLite's triggers keep it at.) A table this list does not name is still copied, last.
- In batches of at most BATCH_ROWS rows or BATCH_BYTES bytes (bundles hold zips of megabytes), one
  transaction each, inserted with psycopg's pipelined executemany.
- Sequences (commands.seq, runs.feed_seq) are advanced past the copied values, never moved back.
- Artifact bytes: a SQLite gateway keeps them as files (artifacts/xx/<blob_id>); on PostgreSQL they
  are rows of artifact_blobs (shared_store/blob_store.py). Every blob an artifact row of the snapshot
  names is read from its file, checked against its id (sha256) and inserted (ON CONFLICT DO NOTHING;
  one already there is not read again). Files no row names are left behind; a named blob without its
  file is reported. (SQLite's own artifact_blobs table is unused, hence not copied.)
- The count of every table is compared at the end; any difference is reported by table name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..db import Database
from ..migrate import require_current as require_sqlite_current
from .migrate import migrate as migrate_postgres

# Tables in copy order (see the module docstring for why ledger and commands precede runs).
COPY_ORDER = (
    "bundles",
    "bundle_deprecations",
    "bundle_checks",
    "flow_keys",
    "capability_defaults",
    "api_tokens",
    "webhook_keys",
    "webhooks",
    "runners",
    "ledger",
    "commands",
    "runs",
    "run_states",
    "run_start_keys",
    "run_tags",
    "run_metadata",
    "schedules",
    "artifacts",
    "bulk_ops",
    "webhook_deliveries",
)
# Each side's own migration record: PostgreSQL's is written by its migrator, not copied.
# SQLite's artifact_blobs is unused (bytes are files there): the files are copied into it instead.
NOT_COPIED = frozenset({"schema_migrations", "artifact_blobs"})
BATCH_ROWS = 1_000
BATCH_BYTES = 8 << 20

# Given the total number of rows, a context manager whose update(n) is called per batch copied.
ProgressFactory = Callable[[int], AbstractContextManager[Any]]


@dataclass
class TableCopy:
    table: str
    source_rows: int
    inserted: int = 0
    target_rows: int = 0

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows


@dataclass
class BlobCopy:
    """The artifact files: those the SQLite artifact rows name and that exist (source_files), how
    many of those PostgreSQL's artifact_blobs holds after the copy (target_rows)."""

    source_files: int = 0
    missing_files: list[str] = field(default_factory=list)  # named by a row, no file on disk
    inserted: int = 0
    target_rows: int = 0

    @property
    def ok(self) -> bool:
        return self.source_files == self.target_rows


@dataclass
class CopySummary:
    tables: list[TableCopy] = field(default_factory=list)
    migrated: list[int] = field(default_factory=list)
    blobs: BlobCopy = field(default_factory=BlobCopy)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and self.blobs.ok

    @property
    def mismatched(self) -> list[str]:
        return [t.table for t in self.tables if not t.ok] + ([] if self.blobs.ok else ["artifact_blobs"])

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tables) + self.blobs.inserted

    def lines(self) -> list[str]:
        out = [
            f"{t.table}: {t.source_rows} in SQLite, {t.target_rows} in PostgreSQL"
            + (f" ({t.inserted} copied now)" if t.inserted else "")
            + ("" if t.ok else "  <-- MISMATCH")
            for t in self.tables
        ]
        b = self.blobs
        out.append(
            f"artifact_blobs: {b.source_files} artifact files in SQLite's data dir, {b.target_rows} in "
            "PostgreSQL"
            + (f" ({b.inserted} copied now)" if b.inserted else "")
            + ("" if b.ok else "  <-- MISMATCH")
        )
        if b.missing_files:
            shown = ", ".join(b.missing_files[:5]) + (" ..." if len(b.missing_files) > 5 else "")
            out.append(f"WARNING: {len(b.missing_files)} blobs named by artifacts have no file: {shown}")
        if not self.ok:
            out.append(f"count check FAILED for: {', '.join(self.mismatched)}")
        return out


def copy_order(tables: list[str]) -> list[str]:
    """The tables to copy, COPY_ORDER first, then any other (sorted) so a new table is never skipped."""
    present = [t for t in tables if t not in NOT_COPIED]
    known = [t for t in COPY_ORDER if t in present]
    return known + sorted(set(present) - set(known))


def copy_sqlite_to_postgres(
    sqlite_path: Path,
    conninfo: str,
    *,
    progress: ProgressFactory | None = None,
    artifacts_dir: Path | None = None,
) -> CopySummary:
    """Migrate the PostgreSQL database, copy every table of the SQLite gateway at `sqlite_path` into it
    (idempotently), then its artifact files (`artifacts_dir`, by default artifacts/ beside the file)
    into artifact_blobs, and compare the counts. The SQLite file must be at this abstractgateway's
    schema."""
    import psycopg

    if not sqlite_path.is_file():
        raise FileNotFoundError(f"no SQLite gateway database at {sqlite_path}")
    summary = CopySummary()
    db = Database(sqlite_path, checkpoint_every_s=None)
    try:
        require_sqlite_current(db)
        summary.migrated = migrate_postgres(conninfo)
        lite = db.connection()
        lite.execute("BEGIN")  # one read snapshot for the copy and the counts
        try:
            tables = copy_order(
                [
                    str(r[0])
                    for r in lite.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                    )
                ]
            )
            counts = {t: _sqlite_count(lite, t) for t in tables}
            named = [str(r[0]) for r in lite.execute("SELECT DISTINCT blob_id FROM artifacts")]
            summary.tables = [TableCopy(t, counts[t]) for t in tables]
            with psycopg.connect(conninfo, autocommit=True) as pg:
                types = _pg_column_types(pg)
                missing = [t for t in tables if t not in types]
                if missing:
                    raise ValueError(f"PostgreSQL schema lacks tables {missing}: is it this version's?")
                bar = progress(sum(counts.values()) + len(named)) if progress else nullcontext()
                with bar as ticker:
                    for entry in summary.tables:
                        entry.inserted = _copy_table(lite, pg, entry.table, types[entry.table], ticker)
                    blob_dir = artifacts_dir or sqlite_path.parent / "artifacts"
                    summary.blobs = _copy_blobs(pg, blob_dir, named, ticker)
                _advance_sequences(pg)
                for entry in summary.tables:
                    entry.target_rows = _pg_count(pg, entry.table)
        finally:
            lite.execute("ROLLBACK")
    finally:
        db.close()
    return summary


def _sqlite_count(lite: Any, table: str) -> int:
    row = lite.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0])


def _pg_count(pg: Any, table: str) -> int:
    row = pg.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0])


def _pg_column_types(pg: Any) -> dict[str, dict[str, str]]:
    """table -> column -> PostgreSQL data type, for the tables of the public schema."""
    out: dict[str, dict[str, str]] = {}
    for table, column, data_type in pg.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ):
        out.setdefault(table, {})[column] = data_type
    return out


def _convert(value: Any, data_type: str) -> Any:
    """A SQLite value for a PostgreSQL column: SQLite stores whatever it was given (text in a BLOB
    column, an integer in a REAL one); PostgreSQL wants the declared type."""
    if value is None:
        return None
    if data_type == "bytea":
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if data_type == "text" and isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8")
    if data_type == "double precision" and isinstance(value, int):
        return float(value)
    return value


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += sum(len(v) for v in row if isinstance(v, str | bytes))
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _copy_table(lite: Any, pg: Any, table: str, pg_types: dict[str, str], ticker: Any) -> int:
    columns = [str(r[1]) for r in lite.execute(f"SELECT * FROM pragma_table_info('{table}')")]
    absent = [c for c in columns if c not in pg_types]
    if absent:
        raise ValueError(f"PostgreSQL table {table} lacks columns {absent}: is it this version's schema?")
    kinds = [pg_types[c] for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    # RETURNING 1 counts the rows inserted (ON CONFLICT DO NOTHING returns none for a skipped one).
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING RETURNING 1'
    inserted = 0
    rows = lite.execute(f'SELECT {names} FROM "{table}"')
    for batch in _batches(rows):
        converted = [tuple(_convert(v, k) for v, k in zip(row, kinds, strict=True)) for row in batch]
        with pg.transaction(), pg.cursor() as cur:
            cur.executemany(insert, converted, returning=True)
            while True:
                inserted += len(cur.fetchall())
                if not cur.nextset():
                    break
        if ticker is not None and hasattr(ticker, "update"):
            ticker.update(len(batch))
    return inserted


def _copy_blobs(pg: Any, blob_dir: Path, named: list[str], ticker: Any) -> BlobCopy:
    """The files of the blobs `named` into artifact_blobs (see the module docstring), in
    transactions of at most BATCH_BYTES (one file larger than that goes alone: it is held in memory
    once, as a bytea parameter must be)."""
    result = BlobCopy()
    present: list[str] = []
    for blob_id in named:
        if (blob_dir / blob_id[:2] / blob_id).is_file():
            present.append(blob_id)
        else:
            result.missing_files.append(blob_id)
    result.source_files = len(present)
    stored = _pg_blobs(pg, present)
    insert = (
        "INSERT INTO artifact_blobs (blob_id, content, size_bytes, created_at, put_at) "
        "VALUES (%s, %s, %s, %s, extract(epoch FROM clock_timestamp())) ON CONFLICT DO NOTHING RETURNING 1"
    )
    batch: list[tuple[Any, ...]] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        with pg.transaction(), pg.cursor() as cur:
            cur.executemany(insert, batch, returning=True)
            while True:
                result.inserted += len(cur.fetchall())
                if not cur.nextset():
                    break
        batch, size = [], 0

    for blob_id in present:
        if blob_id not in stored:
            path = blob_dir / blob_id[:2] / blob_id
            content = path.read_bytes()
            if hashlib.sha256(content).hexdigest() != blob_id:
                raise ValueError(f"artifact file {path} does not hash to its name (damaged): not copied")
            made = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
            if size and size + len(content) > BATCH_BYTES:
                flush()
            batch.append((blob_id, content, len(content), made))
            size += len(content)
        if ticker is not None and hasattr(ticker, "update"):
            ticker.update(1)
    flush()
    result.target_rows = len(_pg_blobs(pg, present))
    return result


def _pg_blobs(pg: Any, blob_ids: list[str]) -> set[str]:
    """Which of these blobs artifact_blobs holds."""
    found: set[str] = set()
    for start in range(0, len(blob_ids), BATCH_ROWS):
        chunk = blob_ids[start : start + BATCH_ROWS]
        found.update(
            str(r[0])
            for r in pg.execute("SELECT blob_id FROM artifact_blobs WHERE blob_id = ANY(%s)", (chunk,))
        )
    return found


def _advance_sequences(pg: Any) -> None:
    """Move every sequence that feeds a column (identity or OWNED BY) past the column's largest value;
    a sequence already beyond it stays where it is."""
    owned = pg.execute(
        """SELECT s.oid::regclass::text, t.relname, a.attname
           FROM pg_class s
           JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
                AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
           JOIN pg_class t ON t.oid = d.refobjid
           JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
           WHERE s.relkind = 'S'"""
    ).fetchall()
    for sequence, table, column in owned:
        largest = pg.execute(f'SELECT max("{column}") FROM "{table}"').fetchone()[0]
        last, called = pg.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()
        handed_out = last if called else last - 1
        if largest is not None and largest > handed_out:
            pg.execute("SELECT setval(%s, %s)", (sequence, largest))
