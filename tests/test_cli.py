"""The abstractgateway command, driven as a user would (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared_store import Database
from shared_store.migrate import known_migrations


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abstractgateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_and_then_reports_up_to_date(tmp_path: Path) -> None:
    latest = known_migrations()[-1].version
    first = _cli("migrate", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert f"schema version {latest}" in first.stdout and "applied" in first.stdout
    assert (tmp_path / "gateway.sqlite3").exists()
    again = _cli("migrate", "--data-dir", str(tmp_path))
    assert again.returncode == 0 and "up to date" in again.stdout
    status = _cli("migrate", "--status", "--db", str(tmp_path / "gateway.sqlite3"))
    assert f"schema version {latest}, latest known {latest}" in status.stdout


def test_migrate_refuses_a_newer_db_and_a_non_db(tmp_path: Path) -> None:
    db_file = tmp_path / "gateway.sqlite3"
    _cli("migrate", "--db", str(db_file))
    db = Database(db_file)
    with db.write() as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x', 'now')")
    db.close()
    newer = _cli("migrate", "--db", str(db_file))
    assert newer.returncode == 2 and "newer than" in newer.stderr and "Traceback" not in newer.stderr
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("hello")
    refused = _cli("migrate", "--db", str(junk))
    assert refused.returncode == 2 and "not an SQLite database" in refused.stderr
    assert junk.read_text() == "hello"
