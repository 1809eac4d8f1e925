"""The one SQLite database (WAL, apsw) shared by the API and the runners.

This package's top level is free of abstractruntime: the API imports it. The abstractruntime store
implementations live in run_store, ledger_store, command_store and artifact_store (runner side).
"""

from .backend import connect_store
from .config import StorePaths
from .db import Database
from .errors import (
    LeaseLost,
    MigrationError,
    NotADatabase,
    SchemaTooNew,
    SchemaTooOld,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    UnknownRun,
)
from .feed import ChangeFeed, FeedEntry
from .leases import Lease, LeaseHolder, reclaim_expired
from .migrate import migrate, require_current, schema_status

__all__ = [
    "ChangeFeed",
    "Database",
    "FeedEntry",
    "Lease",
    "LeaseHolder",
    "LeaseLost",
    "MigrationError",
    "NotADatabase",
    "SchemaTooNew",
    "SchemaTooOld",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "StorePaths",
    "StoreUnavailable",
    "UnknownRun",
    "connect_store",
    "migrate",
    "open_database",
    "reclaim_expired",
    "require_current",
    "schema_status",
]


def open_database(path: str, *, synchronous: str = "NORMAL") -> Database:
    """Open the db (a SQLite file, or a postgresql:// URL) and refuse it unless its schema is exactly
    what this code knows."""
    db = connect_store(path, synchronous=synchronous)
    try:
        require_current(db)
    except BaseException:
        db.close()
        raise
    return db
