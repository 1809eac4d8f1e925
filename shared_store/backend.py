"""Which store a process uses: the SQLite file (the default), or PostgreSQL when a URL names it
(`ABSTRACTGATEWAY_DB_URL` / `--db-url`). Everything above this sees one `Database` interface."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .db import DEFAULT_SIZES, ConnectionSizes, Database


def is_postgres_url(target: str | os.PathLike[str] | None) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def connect_store(
    target: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    synchronous: str = "NORMAL",
    application_name: str = "abstractgateway",
    sizes: ConnectionSizes = DEFAULT_SIZES,
) -> Database:
    """A postgresql:// URL opens the shared PostgreSQL (psycopg is imported only then); anything else
    is the SQLite file at that path, its connections sized by `sizes`. `data_dir` is this host's own
    directory (secrets, local files)."""
    if is_postgres_url(target):
        from .postgres.database import PgDatabase
        from .settings import SharedSettings, read_one

        return PgDatabase(
            str(target),
            data_dir=data_dir,
            application_name=application_name,
            pool_max=read_one(SharedSettings, "pg_pool_max"),
            pooler=read_one(SharedSettings, "pg_transaction_pooler"),
        )
    return Database(Path(target), synchronous=synchronous, sizes=sizes)


def redact(url: str) -> str:
    """The URL without its password (for logs, health and errors)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def describe(db: Database) -> str:
    """Where the store is, for logs and health: the file's path, or the URL without its password."""
    location = getattr(db, "location", None)
    return str(location) if location else str(db.path)


# PostgreSQL's counterpart of SQLite's data_version: the next transaction id moves when any transaction
# that writes begins (a read-only one takes none), so a change committed since is seen at once.
_PG_CHANGE_MARKER = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"


def change_marker(db: Database) -> object:
    """A value that changes whenever another connection may have committed a write (caches key on it)."""
    if db.backend == "postgresql":
        row = db.query_one(_PG_CHANGE_MARKER)
    else:
        row = db.query_one("PRAGMA data_version")
    return None if row is None else row[0]


def writes_ahead(db: Database) -> bool:
    """Writers never block readers: SQLite in WAL mode; PostgreSQL always (MVCC, its own WAL)."""
    if db.backend == "postgresql":
        return True
    mode = db.query_one("PRAGMA journal_mode")
    return mode is not None and str(mode[0]).lower() == "wal"
