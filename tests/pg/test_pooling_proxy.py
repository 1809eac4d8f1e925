"""The store through a transaction-pooling proxy (PgBouncer, pool_mode=transaction), as an operator may
put one between many API hosts / runners and the server: a server connection belongs to a client only
for one transaction, so anything that lives in a session breaks there — server-side prepared
statements (psycopg's default after 5 executions), session advisory locks, SET, LISTEN.

A real PgBouncer (Debian's `pgbouncer`, .ci/apt-packages.txt) in a temporary directory on a free
loopback port, in front of the session's test server (tests/pg/fixtures.py); through it, from several
threads, the store's named operations: the schema check and migrate, queued starts (with duplicate
Idempotency-Keys), claims, fenced ledger appends, releases and the change feed; then the real API and a
runner process end to end. Fewer server connections than client threads: the proxy really multiplexed
them.

Without pgbouncer the tests skip, saying why; with CI set they fail (CI installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pg.fixtures import PgCluster, PgDatabase, require_postgres, skip_unless_ci
from tests.pg.server import SUPERUSER, free_port

# Server connections per (database, user) the proxy keeps: fewer than the client threads below, so
# transactions of different clients must share server connections.
POOL_SIZE = 3
THREADS = 8
START_DEADLINE_S = 60.0

# On EOF of its stdin (the test process ended, however it ended) it stops the proxy.
_WATCHDOG = """
import os, signal, sys
sys.stdin.buffer.read()
try:
    os.kill(int(sys.argv[1]), signal.SIGTERM)
except ProcessLookupError:
    pass
"""


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def require_pgbouncer() -> str:
    """The pgbouncer executable; skip (fail under CI) without one."""
    require_postgres()
    binary = find_pgbouncer()
    if binary is not None:
        return binary
    skip_unless_ci(
        "the pooling-proxy tests", "pgbouncer not found (Debian package pgbouncer; `make test-deps`)"
    )


@dataclass
class Bouncer:
    host: str
    port: int
    root: Path

    def url(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _config(root: Path, cluster: PgCluster, port: int) -> Path:
    server = cluster.server
    (root / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
    ini = root / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'userlist.txt'}\n"
        f"admin_users = {SUPERUSER}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 200\n"
        # A pool that is busy makes clients wait, not fail: the runner threads queue for a server.
        "query_wait_timeout = 120\n"
        f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
    )
    return ini


@pytest.fixture(scope="module")
def bouncer(pg_cluster: PgCluster) -> Iterator[Bouncer]:
    binary = require_pgbouncer()
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="gw-pgbouncer-"))
    as_root = os.geteuid() == 0
    if as_root:  # pgbouncer refuses to run as root
        shutil.chown(root, SUPERUSER, SUPERUSER)
    proc: subprocess.Popen[bytes] | None = None
    watchdog: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(3):  # a free port can be taken before the bind: try another one
            port = free_port()
            ini = _config(root, pg_cluster, port)
            if as_root:
                shutil.chown(ini, SUPERUSER, SUPERUSER)
            proc = subprocess.Popen(
                [binary, str(ini)],
                user=SUPERUSER if as_root else None,
                # It logs to its logfile (read back on failure).
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(proc.pid)],
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
            bouncer = Bouncer("127.0.0.1", port, root)
            if _listening(proc, port):
                break
            _stop(proc, watchdog)
            proc = watchdog = None
            if attempt == 2 or "Address already in use" not in bouncer.log():
                raise RuntimeError(f"pgbouncer did not start:\n{bouncer.log()}")
        else:  # pragma: no cover - the loop breaks or raises
            raise AssertionError
        # The proxy answers and forwards (its own first server connection is made here).
        with psycopg.connect(bouncer.url("postgres"), connect_timeout=10, prepare_threshold=None) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        yield bouncer
    finally:
        if proc is not None and watchdog is not None:
            _stop(proc, watchdog)
        shutil.rmtree(root, ignore_errors=True)


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Bounded wait until the proxy accepts connections (False: it exited or never did)."""
    deadline = time.monotonic() + START_DEADLINE_S
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes], watchdog: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # SIGTERM: pgbouncer closes its connections and exits
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert watchdog.stdin is not None
    watchdog.stdin.close()
    watchdog.wait(30)


@contextmanager
def _load(url: str, *, clients: int) -> Iterator[None]:
    """Short transactions from other clients through the proxy while the block runs."""
    import psycopg

    stop = threading.Event()
    ran = [0] * clients

    def client(number: int) -> None:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(0.0005)")
                ran[number] += 1

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, n) for n in range(clients)]
        try:
            yield
        finally:
            stop.set()
            for future in futures:
                future.result(timeout=60)
    assert all(ran), "every load client ran"


def _server_connections(pg_db: PgDatabase) -> int:
    """Backends on the test's database other than the one asking: the proxy's server connections."""
    import psycopg

    with psycopg.connect(pg_db.dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (pg_db.name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _xids_to_just_below_a_power_of_ten(pg_db: PgDatabase, margin: int = 300) -> int | None:
    """Advance the server's transaction ids to `margin` below the next power of ten, so the workload
    after it crosses one: a cursor compared as text ('1000' < '871') skips runs exactly there. Rolled
    back subtransactions take ids cheaply (~70k/s measured). Returns the power of ten, or None when
    the gap is over 300k (left as it is) or already under the margin."""
    import psycopg

    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        current = int(row[0])
        boundary = 10 ** len(str(current))
        gap = boundary - margin - current
        if not 0 < gap <= 300_000:
            return None
        conn.execute("CREATE TEMP TABLE burn (x int)")
        conn.execute(
            f"DO $$ BEGIN FOR i IN 1..{int(gap)} LOOP BEGIN INSERT INTO burn VALUES (1); "
            "RAISE EXCEPTION 'x'; EXCEPTION WHEN raise_exception THEN NULL; END; END LOOP; END $$"
        )
    return boundary


# --- tests --------------------------------------------------------------------------------------------


def test_migrate_and_the_schema_check_through_the_proxy(bouncer: Bouncer, pg_empty_db: PgDatabase) -> None:
    from shared_store.migrate import require_current, schema_status
    from shared_store.postgres.database import PgDatabase as Store
    from shared_store.postgres.migrate import known_pg_migrations, migrate

    # Each migration is a transaction under a transaction-scoped advisory lock (a session lock would
    # be taken on one server connection and released on another); every one of them goes through.
    # Other clients keep the proxy's few server connections busy meanwhile, so the migrator's
    # transactions land on different ones: a statement prepared on one (psycopg prepares a query it
    # ran 5 times) is unknown on the next ("prepared statement _pg3_0 does not exist", seen here).
    url = bouncer.url(pg_empty_db.name)
    with _load(url, clients=6):
        applied = migrate(url)
    assert applied == [m.version for m in known_pg_migrations()]
    assert migrate(bouncer.url(pg_empty_db.name)) == [], "a second migrate finds nothing pending"
    store = Store(bouncer.url(pg_empty_db.name), notify=False, pooler=True)
    try:
        status = schema_status(store)
        assert status.pending == [] and status.modified == [] and status.current == applied[-1]
        assert require_current(store) == applied[-1]
    finally:
        store.close()


def test_starts_claims_appends_and_the_feed_from_threads_through_the_proxy(
    bouncer: Bouncer, pg_db: PgDatabase
) -> None:
    import psycopg
    from abstractruntime.core.models import RunState, StepRecord

    from shared_store.bundles import ResolvedWorkflow
    from shared_store.feed import ChangeFeed
    from shared_store.leases import LeaseHolder
    from shared_store.ledger_store import SqliteLedgerStore
    from shared_store.postgres.database import PgDatabase as Store
    from shared_store.starts import enqueue_run

    runs_per_thread, records_per_run, claimers = 12, 5, 4
    boundary = _xids_to_just_below_a_power_of_ten(pg_db)
    store = Store(bouncer.url(pg_db.name), pool_max=THREADS + 4, pooler=True)
    resolved = ResolvedWorkflow("demo@1:main", "demo", "1", "main")
    # The API's feed reader, as the SSE hub opens it behind a pooler (no LISTEN: it would hear nothing
    # here; the feed's query, run on each poll, is what delivers).
    feed = ChangeFeed(store, listen=False)
    cursor = head = feed.head()
    seen: dict[str, int] = {}
    work_done = threading.Event()

    def read_feed() -> int:
        nonlocal cursor
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            feed.wait(0.25)
            before = cursor
            entries, cursor = feed.poll(cursor, limit=50)
            positions = [before, *(entry.feed_seq for entry in entries)]
            assert positions == sorted(set(positions)), "the feed moves forward, each entry once"
            for entry in entries:
                seen[entry.run_id] = max(seen.get(entry.run_id, 0), entry.ledger_len)
            finished = sum(1 for n in seen.values() if n == records_per_run)
            if work_done.is_set() and not entries and finished == len(seen) and seen:
                return finished
        return -1

    reader = ThreadPoolExecutor(1)
    reading = reader.submit(read_feed)
    try:
        # Starts: every thread starts its own runs.
        barrier = threading.Barrier(THREADS)

        def start(thread: int) -> list[str]:
            barrier.wait(60)
            return [
                enqueue_run(store, resolved=resolved, input_data={"t": thread, "i": i}).run_id
                for i in range(runs_per_thread)
            ]

        with ThreadPoolExecutor(THREADS) as pool:
            started = [run for ids in pool.map(start, range(THREADS), timeout=300) for run in ids]
        unique = set(started)
        assert len(unique) == len(started) == THREADS * runs_per_thread
        assert store.query_one("SELECT count(*) FROM runs") == (len(unique),)

        # Claims and fenced appends: claimers take batches until nothing is due; each run they hold
        # gets its records (each append its own fenced transaction) and is released.
        def work(number: int) -> list[str]:
            holder = LeaseHolder(store, f"runner-{number}", lease_s=300)
            ledger = SqliteLedgerStore(store, fence=holder)
            taken: list[str] = []
            while leases := holder.claim(4):
                for lease in leases:
                    run = RunState.new(workflow_id=resolved.workflow_id, entry_node="n", run_id=lease.run_id)
                    for step in range(records_per_run):
                        ledger.append(StepRecord.start(run=run, node_id=f"n{step}", effect=None))
                    taken.append(lease.run_id)
                    assert holder.release(
                        lease.run_id, settle={"due_at": None, "paused": 0, "sub_run_id": None}
                    )
            return taken

        with ThreadPoolExecutor(claimers) as pool:
            per_runner = list(pool.map(work, range(claimers), timeout=600))
        claimed = Counter(run for taken in per_runner for run in taken)
        assert set(claimed) == unique, "every started run was claimed"
        assert max(claimed.values()) == 1, "no run claimed twice"
        assert sum(1 for taken in per_runner if taken) >= 2, "the claimers ran side by side"

        # Ledgers dense: seq 1..records_per_run on every run, and ledger_len says so.
        seqs: dict[str, list[int]] = {}
        for run_id, seq in store.query("SELECT run_id, seq FROM ledger ORDER BY run_id, seq"):
            seqs.setdefault(str(run_id), []).append(int(seq))
        assert seqs == {run: list(range(1, records_per_run + 1)) for run in unique}
        assert store.query("SELECT DISTINCT ledger_len FROM runs") == [(records_per_run,)]

        # The feed, read all along (as the SSE hub does: wait for a wake-up, at most 0.25 s, then
        # poll), saw every run up to its last record.
        work_done.set()
        assert reading.result(timeout=300) == len(unique)
        # A reader far behind (an SSE client resuming, a hub that lagged) pages through the backlog.
        backlog: dict[str, int] = {}
        late, position = ChangeFeed(store, listen=False), head
        try:
            while True:
                entries, position = late.poll(position, limit=50)
                if not entries:
                    break
                backlog.update((entry.run_id, entry.ledger_len) for entry in entries)
        finally:
            late.close()
        assert backlog == dict.fromkeys(unique, records_per_run)
        assert seen == dict.fromkeys(unique, records_per_run)
        if boundary is not None:
            row = store.query_one("SELECT pg_current_xact_id()::text")
            assert row is not None and int(row[0]) > boundary, "the workload crossed the power of ten"

        # Eight client threads, at most POOL_SIZE server connections: transactions really shared them.
        assert _server_connections(pg_db) <= POOL_SIZE
    except (psycopg.Error, AssertionError) as exc:
        raise AssertionError(f"{exc}\npgbouncer log tail:\n{bouncer.log()}") from exc
    finally:
        work_done.set()
        reader.shutdown(wait=True)
        feed.close()
        store.close()


def test_concurrent_duplicate_idempotency_keys_through_the_proxy(bouncer: Bouncer, pg_db: PgDatabase) -> None:
    from shared_store.bundles import ResolvedWorkflow
    from shared_store.postgres.database import PgDatabase as Store
    from shared_store.starts import enqueue_run

    keys = 5
    store = Store(bouncer.url(pg_db.name), pool_max=THREADS + 4, notify=False, pooler=True)
    resolved = ResolvedWorkflow("demo@1:main", "demo", "1", "main")
    barrier = threading.Barrier(THREADS)

    def start(_: int) -> list[tuple[str, bool]]:
        barrier.wait(60)
        answers = []
        for key in range(keys):
            result = enqueue_run(
                store, resolved=resolved, input_data={"key": key}, idempotency_key=f"k-{key}"
            )
            answers.append((result.run_id, result.created))
        return answers

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(start, range(THREADS), timeout=300))
        for key in range(keys):
            per_thread = [thread[key] for thread in answers]
            assert len({run for run, _ in per_thread}) == 1, f"k-{key}: every thread answered one run"
            assert sum(created for _, created in per_thread) == 1, f"k-{key}: created once"
        assert store.query_one("SELECT count(*) FROM runs") == (keys,)
    finally:
        store.close()


def test_api_and_runner_through_the_proxy_end_to_end(
    bouncer: Bouncer, pg_db: PgDatabase, tmp_path: Path, flows: Path
) -> None:
    """The real API (Hypercorn on 127.0.0.1) and a real runner process, both on the proxy's URL: runs
    started over HTTP complete, and each run's SSE stream delivers every record once, then `done`."""
    import json

    import httpx

    from shared_store.bundles import import_flows_dir
    from shared_store.postgres.database import PgDatabase as Store
    from tests.api.conftest import TOKEN, make_settings, read_sse, running_server, stop_process

    url = bouncer.url(pg_db.name)
    store = Store(url, data_dir=tmp_path, pooler=True)
    assert import_flows_dir(store, flows) == []
    command = [sys.executable, "-m", "abstractgateway", "runner", "--db-url", url]
    command += ["--flows-dir", str(flows), "--poll-s", "0.02"]
    # The setting README gives hosts behind a transaction pooler (no prepared statements, no LISTEN).
    env = {
        **os.environ,
        "ABSTRACTGATEWAY_DATA_DIR": str(tmp_path),
        "ABSTRACTGATEWAY_PG_TRANSACTION_POOLER": "1",
    }
    env.pop("ABSTRACTGATEWAY_DB_URL", None)
    with (tmp_path / "runner.log").open("ab") as log:
        runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        with (
            running_server(
                store, make_settings(tmp_path, pg_transaction_pooler=True), tmp_path / "artifacts"
            ) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as client,
        ):
            runs = []
            for i in range(4):
                started = client.post(
                    "/api/gateway/runs/start",
                    json={"bundle_id": "bench-echo", "input_data": {"message": f"via proxy {i}"}},
                )
                assert started.status_code == 200, started.text
                runs.append(started.json()["run_id"])
            for run_id in runs:
                with client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as response:
                    assert response.status_code == 200
                    events = read_sse(response)
                steps = [e for e in events if e.get("event") == "step"]
                assert [int(e["id"]) for e in steps] == list(range(1, len(steps) + 1)), "each record once"
                assert json.loads(events[-1]["data"]) == {
                    "status": "completed",
                    "cursor": len(steps),
                    "run_id": run_id,
                }
                view = client.get(f"/api/gateway/runs/{run_id}").json()
                assert view["status"] == "completed" and view["ledger_len"] == len(steps) > 0
                assert view["output"]["result"] == f"via proxy {runs.index(run_id)}"
        assert runner.poll() is None, (tmp_path / "runner.log").read_text()[-2000:]
    finally:
        stop_process(runner)
        store.close()
    assert runner.returncode == 0, (tmp_path / "runner.log").read_text()[-2000:]
