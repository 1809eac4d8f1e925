"""The session's PostgreSQL server and per-test databases (fixtures in tests/pg/fixtures.py)."""

from tests.pg.fixtures import pg_cluster, pg_db, pg_empty_db

__all__ = ["pg_cluster", "pg_db", "pg_empty_db"]
