"""The PostgreSQL test server's fixtures (tests/pg/fixtures.py), for the compose file's live check."""

from tests.pg.fixtures import pg_cluster, pg_empty_db

__all__ = ["pg_cluster", "pg_empty_db"]
