"""Schema migrations: numbered `migrations/NNNN_name.sql` files applied in order, recorded in
`schema_migrations`. All pending files apply in one transaction: a failure keeps none of them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import apsw

from .db import Database, translate_errors
from .errors import MigrationError, SchemaTooNew, SchemaTooOld

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SchemaStatus:
    current: int
    latest: int
    pending: list[int]
    modified: list[int]  # applied migrations whose file changed since


def shipped_migrations() -> Traversable:
    """The folder of migrations this abstractgateway ships: SQLite's `NNNN_*.sql` at its top, another
    dialect's in a folder of its own (`postgresql/`).

    Installed from a wheel, it is the package data of `shared_store.migrations`. The repository keeps
    the files at its top (`migrations/`), which the build maps into that package; run from a checkout
    (an editable install, or the tree on PYTHONPATH) `shared_store` has no such folder, and the one
    beside it is the same tree's. Checked in that order, a wheel never reads a top-level `migrations`
    of site-packages (some other project's)."""
    packaged = resources.files("shared_store").joinpath("migrations")
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if not checkout.is_dir():
        raise MigrationError(f"no migrations shipped: neither {packaged} nor {checkout} is a folder")
    return checkout


def known_migrations(source: Traversable | Path | None = None) -> list[Migration]:
    """The migrations shipped with this abstractgateway (or found in `source`), in order."""
    found: dict[int, Migration] = {}
    for entry in (source or shipped_migrations()).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share number {version:04d}: {found[version].name}, {entry.name}"
            )
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration numbers must run 1..N without gaps, found {versions}")
    return [found[v] for v in versions]


def _on_postgres(db: Database) -> bool:
    return db.backend == "postgresql"


def applied_versions(db: Database) -> dict[int, str]:
    """version -> checksum of what the db has applied (empty for a fresh db)."""
    if _on_postgres(db):
        from .postgres import migrate as pg

        return pg.applied_versions(db.connection())  # type: ignore[arg-type]
    has_table = db.query_one(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    )
    if has_table is None:
        return {}
    return {int(v): str(c) for v, c in db.query("SELECT version, checksum FROM schema_migrations")}


def schema_status(db: Database, source: Traversable | Path | None = None) -> SchemaStatus:
    if _on_postgres(db):
        from .postgres import migrate as pg

        return pg.schema_status(db.connection())  # type: ignore[arg-type]
    known = known_migrations(source)
    applied = applied_versions(db)
    return SchemaStatus(
        current=max(applied, default=0),
        latest=known[-1].version if known else 0,
        pending=[m.version for m in known if m.version not in applied],
        modified=[m.version for m in known if m.version in applied and applied[m.version] != m.checksum],
    )


def migrate(db: Database, source: Traversable | Path | None = None) -> list[int]:
    """Apply every pending migration in one transaction; returns the versions applied."""
    if _on_postgres(db):
        from .postgres import migrate as pg

        return pg.migrate(db.url)  # type: ignore[attr-defined]
    known = known_migrations(source)
    with db.write() as conn:
        # Re-read inside the write lock: two processes migrating at once must not both apply.
        applied = applied_versions(db)
        current = max(applied, default=0)
        latest = known[-1].version if known else 0
        if current > latest:
            raise _too_new(db, current, latest)
        done: list[int] = []
        for migration in known:
            if migration.version in applied:
                continue
            try:
                with translate_errors(db.path):
                    conn.execute(migration.sql)
            except apsw.SQLError as exc:
                raise MigrationError(
                    f"migration {migration.name} failed: {exc}; nothing was applied"
                ) from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, migration.checksum, datetime.now(UTC).isoformat()),
            )
            done.append(migration.version)
    return done


def create_schema_if_new(db: Database, source: Traversable | Path | None = None) -> list[int]:
    """Apply every migration to a db that holds no table yet (a file just created); returns them.

    A db with any table is left as it is, whatever its version: migrating a live db stays an explicit
    act (`migrate` or `--migrate`), so a rolling upgrade never migrates by surprise. Two processes
    starting on the same new file at once are safe: `migrate` re-reads the applied versions under the
    write lock, so the second one finds nothing pending."""
    if _on_postgres(db):
        return migrate(db, source) if not schema_status(db, source).current else []
    if db.query_one("SELECT 1 FROM sqlite_master LIMIT 1") is not None:
        return []
    return migrate(db, source)


def require_current(db: Database, source: Traversable | Path | None = None) -> int:
    """Refuse to run on a db this code does not match; returns the schema version."""
    if _on_postgres(db):
        from .postgres import migrate as pg

        return pg.require_current(db.connection())  # type: ignore[arg-type]
    status = schema_status(db, source)
    if status.current > status.latest:
        raise _too_new(db, status.current, status.latest)
    if status.pending:
        raise SchemaTooOld(
            f"database {db.path} is at schema version {status.current}, this abstractgateway needs "
            f"{status.latest}: run `abstractgateway migrate`"
        )
    return status.current


def _too_new(db: Database, current: int, latest: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"database {db.path} is at schema version {current}, newer than the {latest} this "
        "abstractgateway knows; upgrade abstractgateway (refusing to start rather than misread it)"
    )
