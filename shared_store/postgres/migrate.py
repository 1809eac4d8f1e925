"""PostgreSQL schema migrations: `migrations/postgresql/NNNN_name.sql`, the twins of the SQLite files
(same numbers, same tables), recorded in `schema_migrations` as on SQLite.

Each migration applies in its own transaction under a transaction-scoped advisory lock: two processes
migrating at once serialise, and the second re-reads what the first applied and finds nothing pending.
A failed migration keeps nothing of itself; those before it stay applied (and recorded)."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MigrationError, SchemaTooNew, SchemaTooOld
from ..migrate import Migration, SchemaStatus, known_migrations

if TYPE_CHECKING:
    import psycopg

# pg_advisory_xact_lock key of migrations: any fixed bigint, the same in every abstractgateway.
MIGRATION_LOCK_KEY = 0x6777_6D69_6772_6174  # "gwmigrat"


def migrations_source() -> Traversable:
    """Where the PostgreSQL migrations live: beside the SQLite ones, found the same way (the one place
    that knows the layout)."""
    from importlib import import_module, resources

    # The module, not the package's `migrate` attribute (shared_store re-exports the function).
    sqlite_side = import_module("..migrate", __package__)

    # The packaging change (migrations installed inside shared_store) gives the SQLite migrator a
    # `shipped_migrations()` helper; until it lands, the top-level `migrations` package is the folder.
    shipped = getattr(sqlite_side, "shipped_migrations", None)
    if shipped is not None:
        folder: Traversable = shipped()
        return folder.joinpath("postgresql")
    return resources.files("migrations").joinpath("postgresql")


def known_pg_migrations(source: Traversable | Path | None = None) -> list[Migration]:
    folder = source or migrations_source()
    if not folder.is_dir():
        raise MigrationError(f"no PostgreSQL migrations shipped: {folder} is not a folder")
    known = known_migrations(folder)
    if not known:
        raise MigrationError(f"no PostgreSQL migrations found in {folder}")
    return known


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """version -> checksum of what the db has applied (empty for a fresh db)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return {}
    return {int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}


def schema_status(conn: psycopg.Connection, source: Traversable | Path | None = None) -> SchemaStatus:
    known = known_pg_migrations(source)
    applied = applied_versions(conn)
    return SchemaStatus(
        current=max(applied, default=0),
        latest=known[-1].version if known else 0,
        pending=[m.version for m in known if m.version not in applied],
        modified=[m.version for m in known if m.version in applied and applied[m.version] != m.checksum],
    )


def migrate(conninfo: str, source: Traversable | Path | None = None) -> list[int]:
    """Apply every pending migration, each in its own transaction; returns the versions applied."""
    import psycopg

    known = known_pg_migrations(source)
    latest = known[-1].version if known else 0
    done: list[int] = []
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:  # PgBouncer-safe
        while True:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                # Read under the lock: another migrator may just have applied what we saw pending.
                applied = applied_versions(conn)
                current = max(applied, default=0)
                if current > latest:
                    raise _too_new(current, latest)
                pending = [m for m in known if m.version not in applied]
                if not pending:
                    return done
                migration = pending[0]
                try:
                    # No parameters: psycopg sends the file as one simple query (many statements).
                    conn.execute(migration.sql.encode("utf-8"))
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"PostgreSQL migration {migration.name} failed: {exc}; it was not applied"
                    ) from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (migration.version, migration.name, migration.checksum, datetime.now(UTC).isoformat()),
                )
            done.append(migration.version)


def require_current(conn: psycopg.Connection, source: Traversable | Path | None = None) -> int:
    """Refuse to run on a db this code does not match; returns the schema version."""
    status = schema_status(conn, source)
    if status.current > status.latest:
        raise _too_new(status.current, status.latest)
    if status.pending:
        raise SchemaTooOld(
            f"PostgreSQL database is at schema version {status.current}, this abstractgateway needs "
            f"{status.latest}: run `abstractgateway migrate --db-url ...`"
        )
    return status.current


def _too_new(current: int, latest: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"PostgreSQL database is at schema version {current}, newer than the {latest} this "
        "abstractgateway knows; upgrade abstractgateway (refusing to run rather than misread it)"
    )
