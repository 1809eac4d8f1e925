"""A release the store never got (it was unavailable: a cut link, a write lock held past the busy
deadline) is not forgotten: the heartbeat sends it again once the store answers. Refused then because
another runner has claimed the run since, it is a lease lost — the runner learns it, as it learns of
any takeover — and it frees nothing of the new holder's. Unrefused, the run is given back at once
instead of waiting out its lease. A release the store answered and refused is a lease lost too.

The store is made unavailable for real: on SQLite another connection holds the write lock past the
holder's busy deadline; on PostgreSQL the server ends the holder's sessions and takes no new ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
from abstractruntime.core.models import RunState

from shared_store import LeaseHolder, StoreUnavailable
from shared_store.db import BusyPolicy, Database
from shared_store.leases import Lease, lease_of
from shared_store.run_store import SqliteRunStore
from shared_store.run_unit import RunUnit

Outage = Callable[[], Any]


@pytest.fixture
def holder_db(db, db_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Outage]]:
    """A second Database for the holder under test, and an `outage()` context in which it cannot
    write."""
    if db.backend == "sqlite":
        own = Database(db_path, busy=BusyPolicy(deadline_s=0.05))

        @contextmanager
        def outage() -> Iterator[None]:
            blocker = apsw.Connection(str(db_path))
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()

    else:
        import psycopg

        from shared_store.postgres.database import PgDatabase

        own = PgDatabase(db.url, data_dir=db_path.parent, application_name="missed-release-holder")
        cluster, name = request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_db").name

        @contextmanager
        def outage() -> Iterator[None]:
            # The database takes no new session (a fresh connection would succeed at once) and the
            # holder's are ended; said from the server's own database (not the one it closes).
            with psycopg.connect(cluster.server.conninfo, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'missed-release-holder'"
                )
                try:
                    yield
                finally:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    yield own, outage
    own.close()


def _due_run(db) -> str:
    run = RunState.new(workflow_id="w@1:f", entry_node="start", run_id="run-missed")
    SqliteRunStore(db).save(run)  # RUNNING: due now
    return run.run_id


def _take_over(db, run_id: str) -> LeaseHolder:
    """Runner b claims the run once a's 1 ms lease expired (on the backend's clock)."""
    b = LeaseHolder(db, "b", lease_s=30)
    for _ in range(1_000):
        if b.claim(1):
            return b
        time.sleep(0.01)
    raise AssertionError(f"b never took {run_id} over")


def test_a_missed_release_refused_after_a_takeover_is_a_lease_lost(db, holder_db) -> None:
    own, outage = holder_db
    run_id = _due_run(db)
    a = LeaseHolder(own, "a", lease_s=0.001)
    assert [x.epoch for x in a.claim(1)] == [1]
    with outage(), pytest.raises(StoreUnavailable):
        a.release(run_id)
    assert a.held() == [] and a.unsettled() == [Lease(run_id, "a", 1)]
    _take_over(db, run_id)
    assert a.heartbeat() == [Lease(run_id, "a", 1)], "a learns its release was refused: lost"
    assert a.lost_leases == 1 and a.unsettled() == []
    assert lease_of(db, run_id)[:2] == ("b", 2), "a's late release freed nothing of b's"
    assert a.heartbeat() == [], "reported once"


def test_a_missed_release_is_sent_again_and_frees_the_run(db, holder_db) -> None:
    own, outage = holder_db
    run_id = _due_run(db)
    a = LeaseHolder(own, "a", lease_s=3600)
    a.claim(1)
    with outage(), pytest.raises(StoreUnavailable):
        a.release(run_id)
    assert lease_of(db, run_id)[:2] == ("a", 1), "still held in the store: the release never landed"
    assert a.heartbeat() == [] and a.unsettled() == [] and a.lost_leases == 0
    assert lease_of(db, run_id)[:2] == (None, 1), "given back at once, not after its hour-long lease"
    assert [x.epoch for x in LeaseHolder(db, "b").claim(1)] == [2]


def test_a_release_that_landed_though_its_answer_was_lost_is_settled_not_lost(db) -> None:
    run_id = _due_run(db)
    a = LeaseHolder(db, "a", lease_s=3600)
    a.claim(1)
    assert a.release(run_id)
    a.missed_release(run_id, 1)  # as when the commit's answer, not the commit, was lost
    assert a.heartbeat() == [] and a.unsettled() == [] and a.lost_leases == 0
    assert lease_of(db, run_id)[:2] == (None, 1)


def test_a_run_whose_unit_and_release_both_failed_is_released_again(db, holder_db) -> None:
    """A worker's path: the unit of work commits a run's staged writes with its release; when that
    fails, its staged writes are dropped and the worker gives the lease back (which fails too, the
    store still unavailable). The staged writes never land; the release is sent again."""
    own, outage = holder_db
    run_id = _due_run(db)
    a = LeaseHolder(own, "a", lease_s=0.001)
    a.claim(1)
    unit = RunUnit(own, a)
    store = SqliteRunStore(own, fence=a, unit=unit)
    run = store.load(run_id)
    run.current_node = "next"
    store.save(run)
    with outage():
        with pytest.raises(StoreUnavailable):
            unit.release(run_id)
        unit.discard()
        with pytest.raises(StoreUnavailable):
            a.release(run_id)
    assert a.held() == [] and a.unsettled() == [Lease(run_id, "a", 1)]
    _take_over(db, run_id)
    assert a.heartbeat() == [Lease(run_id, "a", 1)]
    assert db.query_one("SELECT current_node FROM runs WHERE run_id = ?", (run_id,)) == ("start",)


def test_a_release_refused_after_a_takeover_counts_as_a_lease_lost(db) -> None:
    """The store answered, and said no: the lease is lost (counted; the worker logs `lease_lost`)."""
    run_id = _due_run(db)
    a = LeaseHolder(db, "a", lease_s=0.001)
    a.claim(1)
    _take_over(db, run_id)
    assert a.release(run_id) is False and a.lost_leases == 1
    assert a.release(run_id) is False and a.lost_leases == 1, "no longer held: not counted again"
    assert lease_of(db, run_id)[:2] == ("b", 2)
