"""pytest fixtures over tests/pg/server.py: ONE PostgreSQL server per test session, a template database
migrated once, and a fresh database per test cloned from it (CREATE DATABASE ... TEMPLATE, dropped
after). Loaded by tests/pg/conftest.py; another directory's conftest (or the root one, through
`pytest_plugins = ["tests.pg.fixtures"]`) can load them the same way.

Without PostgreSQL the tests skip, saying why; with the env var CI set they fail instead (CI installs
postgresql-15 through .ci/apt-packages.txt, so a missing server there is a broken build)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from tests.pg.server import PgServer, unavailable_reason

TEMPLATE = "gw_template"
_counter = itertools.count(1)
# The session's clusters, for the timing line at the end of the run (tests/pg/conftest.py).
CLUSTERS: list[PgCluster] = []


def gateway_command() -> list[str]:
    """`abstractgateway` as a subprocess command line from this tree (the CLI module may live in a
    package, abstractgateway.cli, or at the top, gateway_cli)."""
    import importlib.util
    import sys

    module = "abstractgateway.cli" if importlib.util.find_spec("abstractgateway") else "gateway_cli"
    return [sys.executable, "-m", module]


def skip_unless_ci(what: str, reason: str) -> NoReturn:
    """Skip saying why; under CI (which installs every package the tests need) fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {what} cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> None:
    """Skip (fail under CI) when no test server can be started here."""
    reason = unavailable_reason()
    if reason is not None:
        skip_unless_ci("PostgreSQL tests", reason)


@dataclass
class PgCluster:
    server: PgServer
    template_seconds: float = 0.0
    clone_seconds: list[float] = field(default_factory=list)

    def timings(self) -> str:
        clones = sorted(self.clone_seconds)
        median = f"{clones[len(clones) // 2] * 1000:.0f} ms" if clones else "-"
        return (
            f"PostgreSQL test server: started in {self.server.start_seconds:.2f} s, template migrated in "
            f"{self.template_seconds:.2f} s, {len(clones)} databases cloned (median {median})"
        )

    def create_db(self, name: str, template: str = TEMPLATE) -> str:
        import psycopg

        began = time.monotonic()
        with psycopg.connect(self.server.conninfo, autocommit=True) as conn:
            # FILE_COPY: a plain copy of the template's files; with fsync off ~tens of ms, where the
            # default WAL_LOG strategy writes every page to the WAL (~3x slower measured).
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        self.clone_seconds.append(time.monotonic() - began)
        return self.server.dsn(name)

    def drop_db(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.server.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PgDatabase:
    """One test's database: `dsn` (libpq key=value) and `url` (postgresql://...)."""

    name: str
    dsn: str
    url: str


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    require_postgres()
    import psycopg

    from shared_store.postgres.migrate import migrate

    server = PgServer()
    try:
        server.start()
        cluster = PgCluster(server)
        began = time.monotonic()
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        migrate(server.dsn(TEMPLATE))
        cluster.template_seconds = time.monotonic() - began
        CLUSTERS.append(cluster)
        yield cluster
    finally:
        server.stop()


@pytest.fixture
def pg_db(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """A migrated database of its own (a clone of the session's template), dropped after the test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    dsn = pg_cluster.create_db(name)
    try:
        yield PgDatabase(name, dsn, pg_cluster.server.url(name))
    finally:
        pg_cluster.drop_db(name)


@pytest.fixture
def pg_empty_db(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """An empty database (no migration applied): for the migrator's own tests."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    dsn = pg_cluster.create_db(name, template="template0")
    try:
        yield PgDatabase(name, dsn, pg_cluster.server.url(name))
    finally:
        pg_cluster.drop_db(name)
