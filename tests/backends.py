"""Which store the end-to-end tests run on: the SQLite file (default) or, with
ABSTRACTGATEWAY_TEST_BACKEND=postgresql, a database of its own on a PostgreSQL server this test process
starts (Debian's binaries, tests/pg/server.py) — the same tests, the same real API and runner processes,
only the store differs. `make test` runs a named subset of tests/api and tests/runner this way
(Makefile: PG_E2E); tests/store runs whole on both through its own parametrized fixture.

A test names its store by a path (`tmp/gateway.sqlite3`) as before: `open_test_store(path)` opens it
(migrated) and `store_args(path)` gives the runner's or serve's command-line flags for it."""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from pathlib import Path

import pytest

from shared_store import Database, migrate

BACKEND = os.environ.get("ABSTRACTGATEWAY_TEST_BACKEND", "sqlite")
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"ABSTRACTGATEWAY_TEST_BACKEND must be sqlite or postgresql, not {BACKEND!r}")

_urls: dict[Path, str] = {}
_cluster: object | None = None
_lock = threading.Lock()
_names = itertools.count(1)


def on_postgres() -> bool:
    return BACKEND == "postgresql"


def _server() -> object:
    """The process's PostgreSQL cluster (started once, stopped at exit) with a migrated template."""
    global _cluster
    with _lock:
        if _cluster is None:
            from tests.pg.fixtures import TEMPLATE, PgCluster, require_postgres
            from tests.pg.server import PgServer

            require_postgres()
            import psycopg

            from shared_store.postgres.migrate import migrate as pg_migrate

            server = PgServer()
            server.start()
            atexit.register(server.stop)
            with psycopg.connect(server.conninfo, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
            pg_migrate(server.dsn(TEMPLATE))
            _cluster = PgCluster(server)
        return _cluster


def open_test_store(db_path: Path) -> Database:
    """The migrated store a test names by `db_path`: that SQLite file, or a fresh PostgreSQL database."""
    if not on_postgres():
        db = Database(db_path)
        migrate(db)
        return db
    from shared_store.postgres.database import PgDatabase
    from tests.pg.fixtures import PgCluster

    url = _urls.get(db_path.resolve())
    if url is None:  # a path named again (a restart) is the same database, as the same file would be
        cluster = _server()
        assert isinstance(cluster, PgCluster)
        name = f"e2e_{os.getpid()}_{next(_names)}"
        cluster.create_db(name)
        url = cluster.server.url(name)
        _urls[db_path.resolve()] = url
    return PgDatabase(url, data_dir=db_path.parent)


def store_url(db_path: Path) -> str | None:
    return _urls.get(db_path.resolve())


def store_args(db_path: Path) -> list[str]:
    """`--db PATH`, or `--db-url URL --data-dir DIR` for a store opened on PostgreSQL (the host's own
    files — workspaces, artifacts, secrets — stay beside where the SQLite file would be)."""
    url = store_url(db_path)
    return ["--db-url", url, "--data-dir", str(db_path.parent)] if url else ["--db", str(db_path)]


def sqlite_only(reason: str) -> pytest.MarkDecorator:
    """Skip a test (or module) on the PostgreSQL pass: it is about the SQLite file itself."""
    return pytest.mark.skipif(on_postgres(), reason=f"SQLite only: {reason}")
