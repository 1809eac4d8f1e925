"""Race tests of the three statements that are wrong on PostgreSQL as SQLite writes them (claims, the
fence, the change feed), against a real server: concurrent claimers, a takeover during an append,
dense ledgers under concurrent appenders, and a feed read while transactions commit out of order.

Interleavings are forced with open transactions on separate connections, and a blocked statement is
recognised from pg_stat_activity (bounded polls), never from a sleep."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from shared_store.errors import LeaseLost
from shared_store.postgres import statements as s
from shared_store.postgres.feed import FeedCursor, PgFeedEntry, feed_head, feed_since
from shared_store.postgres.fence import append_fenced, append_unleased
from shared_store.postgres.leases import claim_runs, reclaim_expired, renew_lease
from tests.pg.fixtures import PgDatabase

NOW = "2026-01-01T00:00:00+00:00"


def _runs(conn: psycopg.Connection, count: int, *, prefix: str = "r", due: bool = True) -> list[str]:
    conn.execute(
        "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, due_at) "
        "SELECT %(p)s || g, 'b@1:f', 'queued', %(now)s, %(now)s, CASE WHEN %(due)s THEN 0.0 END "
        "FROM generate_series(1, %(n)s) g",
        {"p": prefix, "now": NOW, "due": due, "n": count},
    )
    return [f"{prefix}{i}" for i in range(1, count + 1)]


def _scalar(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def connect(pg_db: PgDatabase) -> Iterator[Callable[..., psycopg.Connection]]:
    opened: list[psycopg.Connection] = []

    def open_one(autocommit: bool = True) -> psycopg.Connection:
        # A statement that should not block fails after lock_timeout instead of hanging the test.
        conn = psycopg.connect(pg_db.dsn, autocommit=autocommit, options="-c lock_timeout=20s")
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


def _wait_until_blocked(observer: psycopg.Connection, pid: int) -> None:
    """Bounded poll until backend `pid` waits on a lock."""
    for _ in range(2_000):
        row = observer.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.005)
    raise AssertionError(f"backend {pid} never blocked on a lock")


# --- claims ---------------------------------------------------------------------------------------


def test_concurrent_claimers_never_hold_one_run_twice(connect: Callable[..., psycopg.Connection]) -> None:
    setup = connect()
    runs = _runs(setup, 2_000)
    claimers = [connect() for _ in range(4)]
    barrier = threading.Barrier(len(claimers))

    def claim_all(conn: psycopg.Connection, owner: str) -> list[str]:
        barrier.wait(30)
        got: list[str] = []
        while batch := claim_runs(conn, owner, n=16, lease_s=300):
            got += [c.run_id for c in batch]
        return got

    with ThreadPoolExecutor(len(claimers)) as pool:
        futures = [pool.submit(claim_all, c, f"runner-{i}") for i, c in enumerate(claimers)]
        per_owner = [f.result(timeout=300) for f in futures]
    claimed = [run for got in per_owner for run in got]
    assert len(claimed) == len(runs) and set(claimed) == set(runs), "every run claimed exactly once"
    assert sum(1 for got in per_owner if got) >= 2, "the claimers really ran side by side"
    epochs = setup.execute("SELECT lease_epoch, count(*) FROM runs GROUP BY lease_epoch").fetchall()
    assert epochs == [(1, len(runs))], "no run's epoch bumped twice (no holder silently fenced out)"
    owners: dict[str, int] = dict(
        setup.execute("SELECT lease_owner, count(*) FROM runs GROUP BY lease_owner").fetchall()
    )
    assert owners == {f"runner-{i}": len(got) for i, got in enumerate(per_owner) if got}


def test_a_claim_steps_over_rows_another_claim_is_taking(connect: Callable[..., psycopg.Connection]) -> None:
    setup = connect()
    _runs(setup, 8)
    first = connect(autocommit=False)
    taken_first = {c.run_id for c in claim_runs(first, "a", n=5, lease_s=300)}  # locked, not committed
    other = connect()
    other.execute("SET lock_timeout = '2s'")  # would fail, not wait, if it blocked on first's rows
    taken_other = {c.run_id for c in claim_runs(other, "b", n=5, lease_s=300)}
    assert len(taken_first) == 5 and len(taken_other) == 3 and not taken_first & taken_other
    first.commit()
    assert claim_runs(other, "b", n=5, lease_s=300) == []


def test_claim_order_and_labels(connect: Callable[..., psycopg.Connection]) -> None:
    conn = connect()
    _runs(conn, 3)
    conn.execute("UPDATE runs SET priority = 5 WHERE run_id = 'r3'")
    conn.execute("UPDATE runs SET requires = '[\"gpu\"]' WHERE run_id = 'r2'")
    assert [c.run_id for c in claim_runs(conn, "cpu", n=10, lease_s=60)] == ["r3", "r1"]
    assert [c.run_id for c in claim_runs(conn, "gpu", n=10, lease_s=60, labels=["cpu", "gpu"])] == ["r2"]


def test_expired_leases_are_taken_over_by_the_db_clock(connect: Callable[..., psycopg.Connection]) -> None:
    conn = connect()
    _runs(conn, 3)
    held = claim_runs(conn, "a", n=3, lease_s=0.05)
    assert renew_lease(conn, "r1", "a", held[0].epoch, lease_s=300)
    # Expired by the server's clock (the lease was set from it), whatever this host's clock says.
    for _ in range(400):
        if conn.execute("SELECT count(*) FROM runs WHERE lease_expires_at < gw_epoch()").fetchone() == (2,):
            break
        time.sleep(0.01)
    # A cut-off holder's open transaction locks r2: the takeover skips it instead of waiting.
    holder = connect(autocommit=False)
    holder.execute(s.LOCK_HELD_RUN, {"run_id": "r2", "owner": "a", "epoch": 1})
    other = connect()
    other.execute("SET lock_timeout = '2s'")
    assert reclaim_expired(other) == [("r3", 1)], "the renewed r1 stays held, the locked r2 is skipped"
    taken = claim_runs(other, "b", n=3, lease_s=60)
    assert [(c.run_id, c.epoch) for c in taken] == [("r3", 2)]
    holder.rollback()
    assert reclaim_expired(other) == [("r2", 1)]
    assert not renew_lease(other, "r3", "a", 1, lease_s=60), "the old holder cannot renew a lease it lost"


# --- the fence ------------------------------------------------------------------------------------


def _takeover_during(
    connect: Callable[..., psycopg.Connection], stale_write: Callable[[psycopg.Connection], Any]
) -> tuple[Future[Any], psycopg.Connection]:
    """Runner a holds run r1 at epoch 1; its lease expired; runner b's takeover is in progress (row
    locked, not committed) when a's write starts. Returns a's write (a future) once it is blocked, and
    the takeover's connection (still uncommitted)."""
    setup = connect()
    _runs(setup, 1)
    assert [c.epoch for c in claim_runs(setup, "a", n=1, lease_s=-1)] == [1]  # expired at once
    takeover = connect(autocommit=False)
    assert reclaim_expired(takeover) == [("r1", 1)]
    assert [c.epoch for c in claim_runs(takeover, "b", n=1, lease_s=60)] == [2]
    stale = connect()
    stale_pid = stale.info.backend_pid
    pool = ThreadPoolExecutor(1)
    future = pool.submit(stale_write, stale)
    pool.shutdown(wait=False)
    _wait_until_blocked(setup, stale_pid)
    return future, takeover


def test_a_stale_holders_append_changes_nothing_while_a_takeover_commits(
    connect: Callable[..., psycopg.Connection],
) -> None:
    future, takeover = _takeover_during(connect, lambda c: append_fenced(c, "r1", "a", 1, b"stale"))
    takeover.commit()
    with pytest.raises(LeaseLost):
        future.result(timeout=60)
    conn = connect()
    assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
    assert append_fenced(conn, "r1", "b", 2, b"new holder") == 1
    assert conn.execute("SELECT seq, record FROM ledger").fetchall() == [(1, b"new holder")]


def test_the_sqlite_shaped_append_would_accept_that_stale_write(
    connect: Callable[..., psycopg.Connection],
) -> None:
    """Why the fence differs: the same interleaving through SQLite's INSERT ... SELECT ... WHERE owner
    AND epoch (a snapshot read that does not wait for the takeover) writes the stale record."""
    verbatim = (
        "INSERT INTO ledger (run_id, seq, record) SELECT run_id, ledger_len + 1, 'stale' FROM runs "
        "WHERE run_id = 'r1' AND lease_owner = 'a' AND lease_epoch = 1"
    )
    future, takeover = _takeover_during(connect, lambda c: c.execute(verbatim).rowcount)
    takeover.commit()
    assert future.result(timeout=60) == 1
    assert connect().execute("SELECT count(*) FROM ledger").fetchone() == (1,)


def test_concurrent_appenders_keep_a_ledger_dense(connect: Callable[..., psycopg.Connection]) -> None:
    setup = connect()
    _runs(setup, 1)
    epoch = claim_runs(setup, "a", n=1, lease_s=300)[0].epoch
    writers = [connect() for _ in range(4)]

    def append_many(conn: psycopg.Connection, worker: int) -> list[int]:
        return [append_fenced(conn, "r1", "a", epoch, f"{worker}:{i}".encode()) for i in range(100)]

    with ThreadPoolExecutor(len(writers)) as pool:
        seqs = [
            f.result(timeout=300) for f in [pool.submit(append_many, c, i) for i, c in enumerate(writers)]
        ]
    assert sorted(q for got in seqs for q in got) == list(range(1, 401))
    assert setup.execute("SELECT ledger_len FROM runs").fetchone() == (400,)
    assert setup.execute("SELECT count(*), max(seq) FROM ledger").fetchone() == (400, 400)


# --- the change feed ------------------------------------------------------------------------------


def test_a_late_commit_is_delivered_not_skipped(connect: Callable[..., psycopg.Connection]) -> None:
    setup = connect()
    _runs(setup, 2, due=False)
    reader = connect()
    cursor = feed_head(reader)
    naive_cursor = _scalar(setup, "SELECT max(feed_seq) FROM runs")
    early = connect(autocommit=False)
    append_unleased(early, "r1", b"x")  # started first (lower xid and seq), commits last
    append_unleased(connect(), "r2", b"y")  # committed

    entries, cursor_after = feed_since(reader, cursor)
    assert entries == [] and cursor_after == cursor, "r2 waits for the older open transaction"
    # The sequence-only cursor reads r2 now and moves past r1's seq: r1 would never be delivered.
    naive = setup.execute(
        "SELECT run_id, feed_seq FROM runs WHERE feed_seq > %s ORDER BY feed_seq", (naive_cursor,)
    ).fetchall()
    assert [r for r, _ in naive] == ["r2"]

    early.commit()
    entries, _ = feed_since(reader, cursor)
    assert [(e.run_id, e.ledger_len) for e in entries] == [("r1", 1), ("r2", 1)]
    assert setup.execute("SELECT count(*) FROM runs WHERE feed_seq > %s", (naive[0][1],)).fetchone() == (0,)


def test_feed_delivers_every_change_once_with_transactions_interleaved(
    connect: Callable[..., psycopg.Connection],
) -> None:
    setup = connect()
    runs = _runs(setup, 400, due=False)
    reader = connect()
    start = feed_head(reader)
    writers = [connect(autocommit=False) for _ in range(4)]
    done = threading.Event()

    def write(conn: psycopg.Connection, mine: list[str]) -> None:
        rng = random.Random(len(mine))
        for run_id in mine:
            append_unleased(conn, run_id, b"r")
            time.sleep(rng.uniform(0, 0.003))  # commit order differs from xid / seq order
            conn.commit()

    def read() -> list[PgFeedEntry]:
        seen: list[PgFeedEntry] = []
        cursor: FeedCursor = start
        while True:
            finished = done.is_set()
            entries, cursor = feed_since(reader, cursor, limit=50)
            seen += entries
            if finished and not entries:
                return seen
            time.sleep(0.001)

    with ThreadPoolExecutor(len(writers) + 1) as pool:
        reading = pool.submit(read)
        writing = [pool.submit(write, c, runs[i::4]) for i, c in enumerate(writers)]
        for f in writing:
            f.result(timeout=300)
        done.set()
        seen = reading.result(timeout=300)
    assert sorted(e.run_id for e in seen) == sorted(runs), "each run delivered exactly once"
    assert [e.cursor for e in seen] == sorted(e.cursor for e in seen), "cursor order"
    assert all(e.ledger_len == 1 for e in seen)


# --- retries --------------------------------------------------------------------------------------


def test_a_deadlock_victim_statement_is_retried(connect: Callable[..., psycopg.Connection]) -> None:
    """A child's end locks the child then (child_finished trigger) its parent; a transaction locking
    parent then child deadlocks with it. The statement chosen as the victim runs again and succeeds."""
    from shared_store.postgres.retry import retrying

    setup = connect()
    setup.execute(
        "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, wait_reason, wait_key, "
        "parent_run_id) VALUES ('p', 'w', 'waiting', %(t)s, %(t)s, 'subworkflow', 'subworkflow:c', NULL), "
        "('c', 'w', 'running', %(t)s, %(t)s, NULL, NULL, 'p')",
        {"t": NOW},
    )
    deadlocks_before = _scalar(
        setup, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    other = connect(autocommit=False)
    other.execute("SET deadlock_timeout = '60s'")  # the child's statement detects it, and is the victim
    other.execute("UPDATE runs SET paused = 0 WHERE run_id = 'p'")
    child = connect()
    child.execute("SET deadlock_timeout = '300ms'")
    pool = ThreadPoolExecutor(1)
    ending = pool.submit(
        retrying, child, lambda: child.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'c'")
    )
    pool.shutdown(wait=False)
    _wait_until_blocked(setup, child.info.backend_pid)
    other.execute("UPDATE runs SET actor_id = 'x' WHERE run_id = 'c'")  # the cycle; the child's side loses
    other.commit()
    ending.result(timeout=60)
    child.execute("SELECT pg_stat_force_next_flush()")  # report the deadlock now, not within a second
    child.execute("SELECT 1")
    for _ in range(1_000):  # the statistics collector reports the deadlock a moment later
        deadlocks = _scalar(
            setup, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        if deadlocks > deadlocks_before:
            break
        setup.execute("SELECT pg_stat_clear_snapshot()")
        time.sleep(0.01)
    # At least one (the retry may lose the race for the child's row again, and be retried again).
    assert deadlocks > deadlocks_before
    assert setup.execute("SELECT status FROM runs WHERE run_id = 'c'").fetchone() == ("completed",)
    assert setup.execute("SELECT due_at IS NOT NULL FROM runs WHERE run_id = 'p'").fetchone() == (True,)


# --- idempotent starts and commands ---------------------------------------------------------------


def test_concurrent_duplicate_idempotency_keys_start_one_run(
    connect: Callable[..., psycopg.Connection],
) -> None:
    from shared_store.postgres.idempotent import register_start_key

    clients = [connect(autocommit=False) for _ in range(8)]
    barrier = threading.Barrier(len(clients))

    def start(conn: psycopg.Connection, i: int) -> Any:
        barrier.wait(30)
        keyed = register_start_key(conn, "key-1", f"run-{i}", "sha", NOW)
        time.sleep(0.01)  # hold the key uncommitted a moment: duplicates wait on it
        conn.commit()
        return keyed

    with ThreadPoolExecutor(len(clients)) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(start, c, i) for i, c in enumerate(clients)]]
    assert sum(r.created for r in results) == 1
    assert len({r.run_id for r in results}) == 1
    assert connect().execute("SELECT count(*) FROM run_start_keys").fetchone() == (1,)


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_duplicate_waits_for_the_first_request_to_decide(
    connect: Callable[..., psycopg.Connection], first_commits: bool
) -> None:
    from shared_store.postgres.idempotent import insert_command, register_start_key

    first = connect(autocommit=False)
    assert register_start_key(first, "k", "run-a", "sha-a", NOW).created
    assert not insert_command(first, "cmd-1", "run-a", "pause", b"{}", NOW).duplicate
    observer = connect()
    second = connect()
    pool = ThreadPoolExecutor(1)
    answer = pool.submit(
        lambda: (
            register_start_key(second, "k", "run-b", "sha-b", NOW),
            insert_command(second, "cmd-1", "run-b", "pause", b"{}", NOW),
        )
    )
    pool.shutdown(wait=False)
    _wait_until_blocked(observer, second.info.backend_pid)
    if first_commits:
        first.commit()
    else:
        first.rollback()
    keyed, command = answer.result(timeout=60)
    if first_commits:
        assert (keyed.run_id, keyed.created, keyed.request_sha256, command.duplicate) == (
            "run-a",
            False,
            "sha-a",
            True,
        )
    else:
        assert (keyed.run_id, keyed.created, command.duplicate) == ("run-b", True, False)
    assert observer.execute("SELECT count(*) FROM commands").fetchone() == (1,)


# --- schedules ------------------------------------------------------------------------------------


def test_a_schedule_fires_once_across_a_takeover(connect: Callable[..., psycopg.Connection]) -> None:
    from shared_store.postgres.fence import fire_schedule_fenced

    connect().execute(
        "INSERT INTO schedules (run_id, workflow_id, bundle_id, bundle_version, flow_id, input_data, "
        "start_at, interval_s, next_fire_at, created_at, updated_at) "
        "VALUES ('r1', 'b@1:f', 'b', '1', 'f', '{}', 100.0, 100.0, 100.0, %(t)s, %(t)s)",
        {"t": NOW},
    )

    def fire(conn: psycopg.Connection, owner: str, epoch: int, child: str) -> str | None:
        return fire_schedule_fenced(
            conn, "r1", owner, epoch, fire_at=100.0, next_fire_at=200.0, child_run_id=child,
            workflow_id="b@1:f", now=NOW,
        )  # fmt: skip

    future, takeover = _takeover_during(connect, lambda c: fire(c, "a", 1, "child-a"))
    takeover.commit()
    with pytest.raises(LeaseLost):
        future.result(timeout=60)
    conn = connect()
    assert fire(conn, "b", 2, "child-b") == "child-b"
    assert fire(conn, "b", 2, "child-again") is None, "the same firing twice starts nothing"
    assert conn.execute("SELECT run_id FROM runs WHERE parent_run_id = 'r1'").fetchall() == [("child-b",)]
    assert conn.execute("SELECT fired_count, next_fire_at, last_child_run_id FROM schedules").fetchall() == [
        (1, 200.0, "child-b")
    ]


def test_a_deadlocked_unit_of_the_store_runs_again_whole(pg_db: PgDatabase) -> None:
    """Two of the store's units lock two runs in opposite orders: the server aborts one (40P01) and
    write_unit runs that one again whole, in a fresh transaction: both end up committed."""
    from shared_store.postgres.database import PgDatabase as Store
    from shared_store.postgres.retry import write_unit

    db = Store(pg_db.url)
    try:
        for run_id in ("a", "b"):
            db.execute_write(
                "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at) "
                "VALUES (?, 'w', 'running', ?, ?)",
                (run_id, NOW, NOW),
            )
        both_hold_one = threading.Barrier(2)
        calls = {"ab": 0, "ba": 0}

        def unit(name: str) -> Callable[[Any], str]:
            first, second = name[0], name[1]

            def work(conn: Any) -> str:
                calls[name] += 1
                conn.execute("UPDATE runs SET current_node = ? WHERE run_id = ?", (name, first))
                if calls[name] == 1:
                    both_hold_one.wait(30)  # each holds its first row: the second lock closes the cycle
                conn.execute("UPDATE runs SET actor_id = ? WHERE run_id = ?", (name, second))
                return name

            return work

        with ThreadPoolExecutor(2) as pool:
            done = [pool.submit(write_unit, db, unit(name)) for name in ("ab", "ba")]
            assert sorted(f.result(timeout=120) for f in done) == ["ab", "ba"]
        # One ran once; the other was the victim and ran again whole (more than once if its retry
        # took the contested row first and closed the cycle again).
        assert min(calls.values()) == 1 and max(calls.values()) >= 2, calls
        rows = dict(db.query("SELECT run_id, current_node || '/' || actor_id FROM runs ORDER BY run_id"))
        # The unit that ran again committed last: both of its writes are the ones that stayed.
        last = max(calls, key=calls.__getitem__)
        assert rows[last[0]].split("/")[0] == last and rows[last[1]].split("/")[1] == last, rows
    finally:
        db.close()
