"""`abstractgateway migrate --from=sqlite --db-url ...` copies a real gateway's SQLite db into a real
PostgreSQL: every table, row for row; twice changes nothing; a count mismatch exits 1 naming the table.

The SQLite side is made by the real thing: the API (Hypercorn on 127.0.0.1) and a runner process on a
temporary data dir, running the sample flows (finished, resumed, cancelled, a subflow, a schedule, a
keyed start, an uploaded bundle, an Idempotency-Key), then stopped before the copy. Its artifact files
(the runs' workflow snapshots) go into artifact_blobs, byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

from shared_store.postgres.sqlite_copy import copy_order
from tests.api.conftest import TERMINAL, Gateway, make_gateway, start_runner, stop_process
from tests.api.test_bundles import bundle_bytes, upload
from tests.pg.fixtures import PgDatabase, gateway_command
from tests.pg.test_migrations import PG_ONLY_COLUMNS

REPO = Path(__file__).resolve().parents[2]


def _terminal(view: dict[str, Any]) -> bool:
    return view["status"] in TERMINAL


def _fill(gw: Gateway, flows: Path) -> list[str]:
    """Real content through the real API and runner; returns the run ids it waited to finish."""
    assert upload(gw, bundle_bytes(flows, version="7.0.0")).status_code == 200
    runs = [
        gw.start("bench-echo", {"message": f"m{i}"}, tags=["blue", f"n{i}"], metadata={"i": i})
        for i in range(3)
    ]
    runs.append(gw.start("bench-echo", {"message": "uploaded"}, bundle_version="7.0.0"))
    runs.append(gw.start("bench-echo", {"message": "keyed"}, concurrency_key="k1", max_concurrent=1))
    keyed = gw.client.post(
        "/api/gateway/runs/start",
        json={"bundle_id": "bench-echo", "input_data": {"message": "idem"}},
        headers={"Idempotency-Key": "copy-test-1"},
    )
    assert keyed.status_code == 200, keyed.text
    runs.append(keyed.json()["run_id"])
    runs.append(gw.start("demo-subflow"))
    ask = gw.start("bench-ask")
    gw.wait_for(ask, lambda v: v["status"] == "waiting")
    gw.command(ask, "resume", {"payload": {"response": "yes"}})
    runs.append(ask)
    tick = gw.start("bench-tick", {"n": 100_000, "delay": 0.05})
    gw.wait_for(tick, lambda v: v["ledger_len"] > 2)
    gw.command(tick, "cancel", {"reason": "copy test"})
    runs.append(tick)
    schedule = gw.client.post(
        "/api/gateway/runs/schedule",
        json={
            "bundle_id": "bench-echo",
            "input_data": {"message": "tock"},
            "interval": "0.2s",
            "repeat_count": 2,
        },
    )
    assert schedule.status_code == 200, schedule.text
    parent = schedule.json()["run_id"]
    gw.wait_for(parent, lambda v: v["schedule"]["fired_count"] == 2)
    runs.append(parent)
    for run_id in runs:
        gw.wait_for(run_id, _terminal)
    return runs


@pytest.fixture(scope="module")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Path:
    tmp = tmp_path_factory.mktemp("copy-source")
    with make_gateway(tmp, flows) as gw:
        runner = start_runner(gw.db_path, flows)
        try:
            _fill(gw, flows)
        finally:
            stop_process(runner)
    return tmp / "gateway.sqlite3"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*gateway_command(), "migrate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _normalize(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _pg_types(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    return {
        (t, c): d
        for t, c, d in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
    }


def _as_pg(value: Any, data_type: str) -> Any:
    """What a SQLite value reads back as from PostgreSQL's column type."""
    if value is None:
        return None
    if data_type == "bytea":
        return value.encode() if isinstance(value, str) else bytes(value)
    if data_type == "double precision":
        return float(value)
    return value


def _dump_sqlite(path: Path, types: dict[tuple[str, str], str]) -> dict[str, list[tuple[Any, ...]]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = copy_order(
            [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        )
        tables = [t for t in tables if not t.startswith("sqlite_")]
        out = {}
        for table in tables:
            columns = sorted(str(r[1]) for r in conn.execute(f"SELECT * FROM pragma_table_info('{table}')"))
            names = ", ".join(f'"{c}"' for c in columns)
            out[table] = sorted(
                (tuple(_as_pg(v, types[(table, c)]) for v, c in zip(row, columns, strict=True))
                 for row in conn.execute(f'SELECT {names} FROM "{table}"')),
                key=repr,
            )  # fmt: skip
        return out
    finally:
        conn.close()


def _dump_pg(
    dsn: str, tables: list[str], keep: Callable[[str, str], bool]
) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in tables:
            columns = sorted(
                str(r[0])
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND table_name = %s",
                    (table,),
                )
                if keep(table, str(r[0]))
            )
            names = ", ".join(f'"{c}"' for c in columns)
            out[table] = sorted(
                (tuple(_normalize(v) for v in row) for row in conn.execute(f'SELECT {names} FROM "{table}"')),
                key=repr,
            )
    return out


def _sqlite_blobs(path: Path) -> dict[str, bytes]:
    """The bytes of every blob the SQLite gateway's artifact rows name, from its artifacts/ files."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        named = {str(r[0]) for r in conn.execute("SELECT DISTINCT blob_id FROM artifacts")}
    finally:
        conn.close()
    return {b: (path.parent / "artifacts" / b[:2] / b).read_bytes() for b in named}


def _pg_blobs(dsn: str) -> dict[str, bytes]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT blob_id, content, size_bytes FROM artifact_blobs").fetchall()
    assert all(len(content) == size for _, content, size in rows)
    return {str(b): bytes(content) for b, content, _ in rows}


def _next(conn: psycopg.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_copy_is_complete_exact_and_idempotent(sqlite_gateway: Path, pg_empty_db: PgDatabase) -> None:
    first = _cli("--from=sqlite", "--db", str(sqlite_gateway), "--db-url", pg_empty_db.url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "MISMATCH" not in first.stdout
    assert "copying rows" not in first.stderr, "no progress bar when stderr is not a terminal"
    with psycopg.connect(pg_empty_db.dsn) as conn:
        types = _pg_types(conn)
    source = _dump_sqlite(sqlite_gateway, types)
    assert "artifact_blobs" not in source, "SQLite's table is unused: its bytes are files"
    blobs = _sqlite_blobs(sqlite_gateway)
    assert blobs and source["artifacts"], "the runs stored artifacts (their workflow snapshots)"
    assert _pg_blobs(pg_empty_db.dsn) == blobs, "every artifact file, byte for byte"
    assert all(hashlib.sha256(content).hexdigest() == b for b, content in blobs.items())
    n = len(blobs)
    assert f"artifact_blobs: {n} artifact files in SQLite's data dir, {n} in PostgreSQL ({n} copied now)" in (
        first.stdout
    )
    assert len(source["runs"]) >= 12 and len(source["ledger"]) > 20 and source["schedules"]
    assert source["commands"] and source["run_tags"] and source["run_metadata"] and source["flow_keys"]
    assert {r for r in source["bundles"] if "7.0.0" in r}, "the uploaded bundle is in the source"
    assert source["run_start_keys"]

    parity = _dump_pg(pg_empty_db.dsn, list(source), lambda t, c: (t, c) not in PG_ONLY_COLUMNS)
    for table, rows in source.items():
        assert parity[table] == rows, f"{table} differs after the copy"
    everything = _dump_pg(pg_empty_db.dsn, list(source), lambda t, c: True)

    second = _cli("--from=sqlite", "--db", str(sqlite_gateway), "--db-url", pg_empty_db.url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert ": 0 rows inserted" in second.stdout
    assert _dump_pg(pg_empty_db.dsn, list(source), lambda t, c: True) == everything, "twice changed rows"

    # A copy cut short (some rows of some tables missing) is completed by running it again.
    with psycopg.connect(pg_empty_db.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger WHERE seq > 1")
        conn.execute("DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs ORDER BY run_id LIMIT 5)")
        conn.execute("DELETE FROM commands")
        conn.execute(
            "DELETE FROM artifact_blobs WHERE blob_id IN (SELECT blob_id FROM artifact_blobs LIMIT 1)"
        )
    resumed = _cli("--from=sqlite", "--db", str(sqlite_gateway), "--db-url", pg_empty_db.url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    completed = _dump_pg(pg_empty_db.dsn, list(source), lambda t, c: (t, c) not in PG_ONLY_COLUMNS)
    for table, rows in source.items():
        assert completed[table] == rows, f"{table} differs after completing a cut-short copy"
    assert _pg_blobs(pg_empty_db.dsn) == blobs and "(1 copied now)" in resumed.stdout

    with psycopg.connect(pg_empty_db.dsn) as conn:
        # Sequences moved past the copied values: the next command and feed position are new ones.
        largest_seq = max(r[0] for r in conn.execute("SELECT seq FROM commands"))
        assert _next(conn, "SELECT nextval(pg_get_serial_sequence('commands', 'seq'))") > largest_seq
        largest_feed = max(r[0] for r in conn.execute("SELECT feed_seq FROM runs"))
        assert _next(conn, "SELECT nextval('runs_feed_seq')") > largest_feed


def test_a_count_mismatch_exits_1_naming_the_table(sqlite_gateway: Path, pg_empty_db: PgDatabase) -> None:
    first = _cli("--from=sqlite", "--db", str(sqlite_gateway), "--db-url", pg_empty_db.url)
    assert first.returncode == 0, first.stdout + first.stderr
    with psycopg.connect(pg_empty_db.dsn) as conn:
        conn.execute("INSERT INTO run_tags (tag, created_at, run_id) VALUES ('extra', 'x', 'nope')")
    again = _cli("--from=sqlite", "--db", str(sqlite_gateway), "--db-url", pg_empty_db.url)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "run_tags" in again.stderr and "runs," not in again.stderr


def test_from_sqlite_needs_a_db_url_and_an_existing_file(tmp_path: Path, pg_empty_db: PgDatabase) -> None:
    no_url = _cli("--from=sqlite", "--db", str(tmp_path / "x.sqlite3"))
    assert no_url.returncode == 2 and "--db-url" in no_url.stderr
    not_pg = _cli("--from=sqlite", "--db", str(tmp_path / "x.sqlite3"), "--db-url", "mysql://u@h/db")
    assert not_pg.returncode == 2 and "must be a postgresql:// URL, not 'mysql'" in not_pg.stderr
    missing = _cli("--from=sqlite", "--db", str(tmp_path / "x.sqlite3"), "--db-url", pg_empty_db.url)
    assert missing.returncode == 2 and "no SQLite gateway database" in missing.stderr
    assert not (tmp_path / "x.sqlite3").exists(), "a missing source is never created"


def test_artifact_files_missing_or_damaged(
    sqlite_gateway: Path, pg_empty_db: PgDatabase, tmp_path: Path
) -> None:
    """A blob an artifact row names whose file is gone is reported (nothing to copy, the counts agree);
    a file whose bytes do not hash to its name is refused: exit 2, naming it."""
    source = tmp_path / "gateway"
    shutil.copytree(sqlite_gateway.parent, source, ignore=shutil.ignore_patterns("*.log"))
    files = sorted(p for p in (source / "artifacts").rglob("*") if p.is_file())
    assert len(files) >= 2
    files[0].unlink()
    copied = _cli("--from=sqlite", "--db", str(source / "gateway.sqlite3"), "--db-url", pg_empty_db.url)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert f"WARNING: 1 blobs named by artifacts have no file: {files[0].name}" in copied.stdout
    assert len(_pg_blobs(pg_empty_db.dsn)) == len(files) - 1

    with psycopg.connect(pg_empty_db.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM artifact_blobs WHERE blob_id = %s", (files[1].name,))
    files[1].write_bytes(b"not what it was")
    damaged = _cli("--from=sqlite", "--db", str(source / "gateway.sqlite3"), "--db-url", pg_empty_db.url)
    assert damaged.returncode == 2 and files[1].name in damaged.stderr and "damaged" in damaged.stderr
