"""The store's conformance suite runs on both backends: every test here that takes `db` runs once on a
migrated SQLite file and once on a migrated PostgreSQL database (a clone of the session's template).
A test that is about one backend's own machinery (SQLite's files, WAL, query plans) builds its own
Database instead of taking `db`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg.fixtures import pg_cluster, pg_db  # noqa: F401 - fixtures used by name

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, db_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    if backend == "sqlite":
        from shared_store import Database, migrate

        database = Database(db_path)
        migrate(database)
    else:
        from shared_store.postgres.database import PgDatabase

        target = request.getfixturevalue("pg_db")
        database = PgDatabase(target.url, data_dir=db_path.parent)
    yield database
    database.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`sqlite_only(reason)`: a test of SQLite's own machinery (its query planner, its files) runs on
    the SQLite backend alone; its PostgreSQL case is skipped, saying why."""
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("backend") != "postgresql":
            continue
        item.add_marker(pytest.mark.skip(reason=f"SQLite only: {marker.args[0]}"))
