"""The PostgreSQL a benchmark runs against: a throwaway server (tests/pg/server.py's PgServer: Debian's
binaries, a temporary directory, a free loopback port), but DURABLE, unlike the tests' one.

The tests turn fsync, synchronous_commit and full_page_writes off to start fast; a benchmark that did
would measure commits that never reach the disk (POSTGRES.md-style reproductions measured single-row
commits at 1.2-1.6k/s durable against 5.4k/s with synchronous_commit off). So here all three are on,
as in a deployment that acknowledges a 2xx only once it is committed. `--db-url` instead points a
bench at a server of one's own (its settings are read back and reported)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The settings the benches' own server runs with (reported in the JSON line and the document).
BENCH_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "max_connections": "200",
}
# What the report shows of a server's configuration (read back from the server itself).
SHOWN_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers",
                  "wal_level", "default_toast_compression")  # fmt: skip


def unavailable_reason() -> str | None:
    """Why no bench PostgreSQL can be started on this machine (None: it can)."""
    try:
        from tests.pg.server import unavailable_reason as reason
    except ImportError as exc:  # an installed package without the repo's tests/
        return f"tests/pg/server.py is not importable ({exc})"
    return reason()


@dataclass
class BenchPostgres:
    """A server the bench may create databases on: `fresh(name)` gives a migrated one's URL."""

    admin_url: str  # a URL of a database that exists (postgres), to CREATE DATABASE from
    own_server: bool
    settings: dict[str, str] = field(default_factory=dict)
    start_s: float = 0.0
    server_pid: int | None = None  # the postmaster of a server of the bench's own (its CPU is metered)

    def url(self, dbname: str) -> str:
        from urllib.parse import quote

        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        host, port, user = params.get("host", "127.0.0.1"), params.get("port", "5432"), params.get("user")
        password = params.get("password")
        auth = f"{quote(user)}:{quote(password)}@" if user and password else f"{quote(user)}@" if user else ""
        return f"postgresql://{auth}{host}:{port}/{dbname}"

    def fresh(self, name: str) -> str:
        """A new, migrated database (any earlier one of that name dropped first); its URL."""
        import psycopg

        from shared_store.postgres.migrate import migrate

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        migrate(url)
        return url

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def info(self) -> dict[str, Any]:
        """What the JSON line says about the server: whose it is, its settings, start time."""
        return {"own_server": self.own_server, "settings": self.settings, "start_s": self.start_s}


def read_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in SHOWN_SETTINGS}  # type: ignore[index]


@contextmanager
def bench_postgres(db_url: str | None = None) -> Iterator[BenchPostgres]:
    """`db_url` given: that server (the bench creates and drops its own databases there). Else a
    durable throwaway server of the bench's own, stopped (and its directory removed) on exit."""
    if db_url:
        yield BenchPostgres(db_url, False, read_settings(db_url))
        return
    from tests.pg.server import PgServer

    began = time.perf_counter()
    server = PgServer(settings=BENCH_SETTINGS)
    try:
        server.start()
        admin = server.url("postgres")
        # postmaster.pid's first line: the server's pid (its backends are its children).
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        yield BenchPostgres(admin, True, read_settings(admin), time.perf_counter() - began, pid)
    finally:
        server.stop()


def add_backend_options(parser: Any) -> None:
    """--backend and --db-url, shared by the store, runner and API benches."""
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the store under test; postgresql runs the cases the report's PostgreSQL column shows, "
        "on a durable server the bench starts (fsync and synchronous_commit on) unless --db-url names one",
    )
    parser.add_argument(
        "--db-url",
        help="with --backend postgresql: a postgresql:// URL of an existing database on a server where the "
        "bench may CREATE and DROP its own databases (instead of starting one)",
    )


def store_args(target: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> list[str]:
    """How `abstractgateway serve` / `runner` are pointed at a bench's store: `--db FILE`, or
    `--db-url URL` for PostgreSQL with `--data-dir` (what a host keeps locally: artifacts, secrets)
    in the case's temp dir."""
    from shared_store.backend import is_postgres_url

    if is_postgres_url(target):
        return ["--db-url", str(target), "--data-dir", str(data_dir)]
    return ["--db", str(target)]


def unavailable_line(bench: str, reason: str) -> dict[str, Any]:
    """The JSON line a PostgreSQL bench prints when it cannot run here (exit 0: the report says why)."""
    return {"bench": bench, "backend": "postgresql", "available": False, "reason": reason, "ok": True}
