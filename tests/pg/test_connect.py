"""The store's PostgreSQL connections: the settings a multi-host deployment needs, and a pool that
replaces a connection the server (or a cut link) ended instead of handing it out."""

from __future__ import annotations

import psycopg

from shared_store.postgres.connect import connect, make_pool
from tests.pg.fixtures import PgDatabase


def test_connections_carry_the_settings(pg_db: PgDatabase) -> None:
    with connect(pg_db.url, "gw-test") as conn:
        assert conn.autocommit and conn.prepare_threshold is None
        params = conn.info.get_parameters()
        assert params["tcp_user_timeout"] == "10000" and params["keepalives_idle"] == "5"
        assert conn.execute("SHOW application_name").fetchone() == ("gw-test",)


def test_the_pool_replaces_a_connection_the_server_ended(pg_db: PgDatabase) -> None:
    pool = make_pool(pg_db.url, min_size=1, max_size=1, application_name="gw-pool")
    try:
        with pool.connection() as conn:
            first_pid = conn.info.backend_pid
        with psycopg.connect(pg_db.dsn, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,)).fetchone() == (True,)
        with pool.connection(timeout=30) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != first_pid
    finally:
        pool.close()
