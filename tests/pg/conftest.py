"""The session's PostgreSQL server and per-test databases (fixtures in tests/pg/fixtures.py)."""

import pytest

from tests.pg.fixtures import CLUSTERS, pg_cluster, pg_db, pg_empty_db

__all__ = ["pg_cluster", "pg_db", "pg_empty_db"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cluster in CLUSTERS:
        terminalreporter.write_line(cluster.timings())
