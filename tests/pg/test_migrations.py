"""The PostgreSQL migrator against a real server, and the schema's parity with SQLite's."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from shared_store import Database
from shared_store import migrate as sqlite_migrate
from shared_store.errors import MigrationError, SchemaTooNew
from shared_store.migrate import known_migrations
from shared_store.postgres.migrate import known_pg_migrations, migrate, schema_status
from tests.pg.fixtures import PgDatabase, gateway_command

# Columns only the PostgreSQL schema has, and why (anything else must match SQLite's exactly).
PG_ONLY_COLUMNS = {
    ("runs", "feed_xid"),  # the change feed's commit-order cursor (0001: xid8 of the writing transaction)
}
# SQLite indexes PostgreSQL does without (its b-tree primary keys read backwards: no DESC variant).
SQLITE_ONLY_INDEXES: set[str] = set()


def test_fresh_db_migrates_to_latest_and_twice_is_a_no_op(pg_empty_db: PgDatabase) -> None:
    latest = len(known_pg_migrations())
    assert migrate(pg_empty_db.dsn) == list(range(1, latest + 1))
    assert migrate(pg_empty_db.dsn) == []
    with psycopg.connect(pg_empty_db.dsn) as conn:
        status = schema_status(conn)
        assert (status.current, status.latest, status.pending, status.modified) == (latest, latest, [], [])
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, latest + 1))


def test_same_numbers_as_sqlite() -> None:
    sqlite = [(m.version, m.name) for m in known_migrations()]
    pg = [(m.version, m.name) for m in known_pg_migrations()]
    assert pg == sqlite, "every SQLite migration needs its PostgreSQL twin under the same file name"


def test_concurrent_migrators_apply_each_migration_once(pg_empty_db: PgDatabase) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait(30)
            results.append(migrate(pg_empty_db.dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 4
    applied = sorted(v for r in results for v in r)
    assert applied == list(range(1, len(known_pg_migrations()) + 1)), results
    with psycopg.connect(pg_empty_db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(applied),)


def test_failed_migration_keeps_nothing_of_itself(pg_empty_db: PgDatabase, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "checksum text NOT NULL, applied_at text NOT NULL); CREATE TABLE a (x int);"
    )
    (tmp_path / "0002_two.sql").write_text("CREATE TABLE b (x int); CREATE TABLE a (y int);")
    with pytest.raises(MigrationError, match=r"0002_two\.sql"):
        migrate(pg_empty_db.dsn, tmp_path)
    with psycopg.connect(pg_empty_db.dsn) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)


def test_newer_schema_is_refused(pg_db: PgDatabase) -> None:
    with psycopg.connect(pg_db.dsn) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 'x', 'now')")
    with pytest.raises(SchemaTooNew, match="999"):
        migrate(pg_db.dsn)


def _sqlite_schema(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    db = Database(path)
    try:
        sqlite_migrate(db)
        tables = [
            r[0]
            for r in db.query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        columns: dict[str, list[str]] = {}
        keys: dict[str, list[str]] = {}
        for table in tables:
            info = list(db.query(f"SELECT name, pk FROM pragma_table_info('{table}')"))
            columns[table] = sorted(str(name) for name, _ in info)
            keys[table] = [str(name) for name, pk in sorted(info, key=lambda r: r[1]) if pk]
        indexes = {
            str(r[0])
            for r in db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }
    finally:
        db.close()
    return columns, keys, indexes


def _pg_schema(dsn: str) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    with psycopg.connect(dsn) as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ):
            if (table, column) not in PG_ONLY_COLUMNS:
                columns.setdefault(table, []).append(column)
        keys: dict[str, list[str]] = {}
        for table, column in conn.execute(
            """SELECT c.relname, a.attname FROM pg_index i
               JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
               WHERE i.indisprimary ORDER BY c.relname, k.ord"""
        ):
            keys.setdefault(table, []).append(column)
        indexes = {
            str(r[0])
            for r in conn.execute(
                """SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                   JOIN pg_namespace n ON n.oid = i.relnamespace AND n.nspname = 'public'
                   WHERE NOT x.indisprimary
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"""
            )
        }
    return {t: sorted(c) for t, c in columns.items()}, keys, indexes


def test_schema_parity_with_sqlite(pg_db: PgDatabase, tmp_path: Path) -> None:
    """Tables, columns, primary keys and index names match the SQLite schema: a SQLite migration
    without its PostgreSQL twin (or a twin that forgot a column) fails here."""
    s_columns, s_keys, s_indexes = _sqlite_schema(tmp_path / "gateway.sqlite3")
    p_columns, p_keys, p_indexes = _pg_schema(pg_db.dsn)
    assert sorted(p_columns) == sorted(s_columns)
    for table in s_columns:
        assert p_columns[table] == s_columns[table], table
        assert p_keys.get(table, []) == s_keys[table], table
    assert p_indexes == s_indexes - SQLITE_ONLY_INDEXES


def test_migrate_cli_with_a_db_url(pg_empty_db: PgDatabase) -> None:
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    # The test server trusts every client; the password is there to check it is never printed.
    url = pg_empty_db.url.replace("postgres@", "postgres:s3cret-pw@")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*gateway_command(), "migrate", "--db-url", url, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
            timeout=120,
            check=False,
        )

    latest = len(known_pg_migrations())
    first = cli()
    assert first.returncode == 0 and "applied 0001" in first.stdout and f"{latest:04d}" in first.stdout
    again = cli()
    assert again.returncode == 0 and "up to date" in again.stdout
    status = cli("--status")
    assert status.returncode == 0 and f"schema version {latest}, latest known {latest}" in status.stdout
    assert all("s3cret-pw" not in r.stdout + r.stderr for r in (first, again, status))


# SQLite triggers whose PostgreSQL twin has another name (one BEFORE trigger, on insert and update,
# does the work of SQLite's AFTER UPDATE one; SQLite's inserts write claim_order themselves, 0013).
TRIGGER_TWINS = {"runs_claim_order_updated": "runs_claim_order"}


def test_every_sqlite_trigger_has_a_postgresql_twin(pg_db: PgDatabase, tmp_path: Path) -> None:
    db = Database(tmp_path / "gateway.sqlite3")
    try:
        sqlite_migrate(db)
        sqlite = {str(r[0]) for r in db.query("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        db.close()
    with psycopg.connect(pg_db.dsn) as conn:
        pg = {str(r[0]) for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert {TRIGGER_TWINS.get(name, name) for name in sqlite} == pg


def test_run_states_are_lz4_compressed(pg_db: PgDatabase) -> None:
    with psycopg.connect(pg_db.dsn) as conn:
        rows = conn.execute(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'run_states'::regclass "
            "AND attname IN ('run_json', 'start_json') ORDER BY attname"
        ).fetchall()
    assert rows == [("run_json", "l"), ("start_json", "l")]
