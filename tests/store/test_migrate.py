"""Migrations: fresh db to latest, re-run is a no-op, newer db refused, older db told to migrate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared_store import Database, MigrationError, SchemaTooNew, SchemaTooOld, migrate, open_database
from shared_store.migrate import known_migrations, require_current, schema_status, shipped_migrations


def test_fresh_db_migrates_to_latest_and_rerun_is_a_noop(db_path: Path) -> None:
    db = Database(db_path)
    latest = known_migrations()[-1].version
    assert schema_status(db).current == 0
    assert migrate(db) == list(range(1, latest + 1))
    assert require_current(db) == latest
    tables = {row[0] for row in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "run_states", "ledger", "commands", "artifacts", "runners", "schema_migrations"} <= tables
    before = db.query("SELECT version, checksum, applied_at FROM schema_migrations")
    assert migrate(db) == []
    assert db.query("SELECT version, checksum, applied_at FROM schema_migrations") == before
    assert db.query_one("PRAGMA journal_mode") == ("wal",)


def test_db_newer_than_known_is_refused(db, db_path: Path) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (999, 'future', 'x', 'now')"
        )
    with pytest.raises(SchemaTooNew, match="schema version 999, newer than"):
        open_database(str(getattr(db, "url", db_path)))
    with pytest.raises(SchemaTooNew):
        migrate(db)


def test_db_older_than_known_says_to_run_migrate(db_path: Path) -> None:
    Database(db_path).close()
    with pytest.raises(SchemaTooOld, match="run `abstractgateway migrate`"):
        open_database(str(db_path))


def test_pending_migration_applies_in_order(tmp_path: Path, db_path: Path) -> None:
    source = tmp_path / "migrations"
    shutil.copytree(Path(str(shipped_migrations())), source)
    db = Database(db_path)
    migrate(db, source)
    nxt = known_migrations(source)[-1].version + 1
    (source / f"{nxt:04d}_add_note.sql").write_text("ALTER TABLE runs ADD COLUMN note TEXT;\n")
    with pytest.raises(SchemaTooOld):
        require_current(db, source)
    assert schema_status(db, source).pending == [nxt]
    assert migrate(db, source) == [nxt]
    assert "note" in {row[1] for row in db.query("PRAGMA table_info(runs)")}


def test_failing_migration_keeps_nothing(tmp_path: Path, db_path: Path) -> None:
    source = tmp_path / "migrations"
    shutil.copytree(Path(str(shipped_migrations())), source)
    nxt = known_migrations(source)[-1].version + 1
    (source / f"{nxt:04d}_broken.sql").write_text("CREATE TABLE half (x INT);\nTHIS IS NOT SQL;\n")
    db = Database(db_path)
    with pytest.raises(MigrationError, match=rf"{nxt:04d}_broken\.sql failed"):
        migrate(db, source)
    assert schema_status(db, source).current == 0, "every earlier migration rolled back with the broken one"
    assert db.query("SELECT name FROM sqlite_master WHERE name IN ('half', 'runs')") == []


def test_gaps_in_migration_numbers_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "migrations"
    source.mkdir()
    (source / "0001_a.sql").write_text("SELECT 1;")
    (source / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        known_migrations(source)


def test_changed_migration_file_is_reported(tmp_path: Path, db_path: Path) -> None:
    source = tmp_path / "migrations"
    shutil.copytree(Path(str(shipped_migrations())), source)
    db = Database(db_path)
    migrate(db, source)
    first = sorted(source.glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    assert schema_status(db, source).modified == [1]
