"""Row-level run leases: claim, heartbeat, release, reclaim — and the fence that writes check.

A runner holds a run while `runs.lease_owner` is its id and `runs.lease_epoch` is the epoch its
claim returned. Every claim bumps the epoch, so a runner whose lease expired and was taken over
carries a stale epoch: its writes (which check owner + epoch in the same statement) are rejected
with LeaseLost.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any, NamedTuple

import apsw

from . import queries as q
from .db import Database
from .errors import LeaseLost, StoreUnavailable
from .postgres.retry import write_unit

# Expired leases freed per claim pass. SQLite frees all in one statement (the writer holds the whole
# db); PostgreSQL takes them in batches under SKIP LOCKED, so a pass never waits on a row a cut-off
# holder still has locked.
RECLAIM_BATCH = 10_000


@functools.cache
def claim_statement(labelled: bool, n: int, backend: str) -> str:
    """The claim statement for a batch of n. On SQLite its LIMIT is written in: SQLite 3.47+ reads a
    bound LIMIT's value when it plans, so binding :n again (every claim) expired the prepared
    statement and each claim re-prepared the UPDATE with its indexes and triggers (~180k of ~700k CPU
    instructions per claim of 16, callgrind). A runner claims in a few batch sizes: the connection's
    statement cache keeps one prepared statement per size. PostgreSQL runs the named statement's twin."""
    sql = q.CLAIM_RUNS if labelled else q.CLAIM_RUNS_UNLABELLED
    return sql if backend == "postgresql" else sql.replace("LIMIT :n)", f"LIMIT {int(n)})")


# RETURNING columns of the claim: run_id, lease_epoch, priority, claim_order, stalled_claims.
_PRIORITY = itemgetter(2)
_CLAIM_ORDER = itemgetter(3)


class Lease(NamedTuple):
    """One held lease. A named tuple, not a frozen dataclass: a claim of 16 builds 16 of them, and a
    frozen dataclass's __init__ (object.__setattr__ per field) cost ~10% of a claim's CPU (65k of
    ~630k instructions per claim of 16, callgrind)."""

    run_id: str
    owner: str
    epoch: int
    stalled: int = 0  # claims in a row that ended without a release, mid-tick (see MARK_STALLED)


class LeaseHolder:
    """The leases one runner holds. Stores bound to it write only runs it holds (fencing)."""

    def __init__(
        self,
        db: Database,
        owner: str,
        *,
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        labels: list[str] | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a lease owner needs a non-empty runner id")
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, not {lease_s}")
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        # The runner's labels: claims take only runs whose required labels are all among them.
        self.labels = sorted(labels or [])
        self.labels_json = json.dumps(self.labels)
        self._epochs: dict[str, int] = {}
        # Releases that never reached the store (it was unavailable): run_id -> the epoch given back.
        # The heartbeat sends them again once the store answers, and one refused because another
        # runner claimed the run since is a lease lost. Forgotten instead, a runner cut off for longer
        # than its connection's tcp_user_timeout (10 s) failed its worker's release and, its link back,
        # never learnt that its runs had been taken over (the multi-host test, on a slow CI machine).
        self._unsettled: dict[str, int] = {}
        self._lock = threading.Lock()
        # Counts the runner's metrics export: leases claimed, expired leases taken back (takeovers
        # of another runner's runs), and leases found lost (a write or renewal fenced out).
        self.claims = 0
        self.takeovers = 0
        self.lost_leases = 0

    # --- what the stores ask -------------------------------------------------------------------
    def epoch(self, run_id: str) -> int | None:
        """The epoch this holder has for `run_id`, or None when it does not hold it."""
        return self._epochs.get(run_id)

    def adopt(self, run_id: str, epoch: int) -> None:
        """Record a lease obtained outside claim(): a run this runner created is born leased to it."""
        with self._lock:
            self._epochs[run_id] = epoch

    def params(self, run_id: str) -> dict[str, object]:
        """Fence parameters for a write to `run_id`; raises LeaseLost when not held."""
        epoch = self._epochs.get(run_id)
        if epoch is None:
            raise LeaseLost(run_id, self.owner, None)
        return {"owner": self.owner, "epoch": epoch}

    def lost(self, run_id: str) -> LeaseLost:
        """Forget `run_id` after a rejected write and return the error to raise."""
        with self._lock:
            epoch = self._epochs.pop(run_id, None)
            self.lost_leases += 1
        return LeaseLost(run_id, self.owner, epoch)

    def held(self) -> list[Lease]:
        with self._lock:
            return [Lease(run_id, self.owner, epoch) for run_id, epoch in self._epochs.items()]

    def work_waiting(self) -> bool:
        """Is there anything for this runner to do (a due run its labels allow, an expired lease, a
        pending event)? Three index probes, no write: a runner's idle cost."""
        row = self.db.query_one(q.WORK_PROBE, {"now": self.clock(), "labels": self.labels_json})
        return bool(row and row[0])

    # --- lease lifecycle -----------------------------------------------------------------------
    def claim(self, n: int) -> list[Lease]:
        """Lease up to n due, unleased runs this holder's labels allow (higher priority first, then
        claim order: fair across concurrency keys, else due time); reclaims expired leases first."""
        if n <= 0:
            return []
        now = self.clock()

        def claim_pass(conn: apsw.Connection) -> tuple[int, list[Any]]:
            conn.execute(q.RECLAIM_EXPIRED, {"now": now, "n": RECLAIM_BATCH})
            reclaimed = conn.changes()
            cursor_rows = conn.execute(
                claim_statement(bool(self.labels), n, self.db.backend),
                {
                    "owner": self.owner,
                    "expires_at": now + self.lease_s,
                    "lease_s": self.lease_s,
                    "now": now,
                    "n": n,
                    "labels": self.labels_json,
                },
            ).fetchall()
            return reclaimed, list(cursor_rows)

        reclaimed, rows = write_unit(self.db, claim_pass)
        if len(rows) > 1:
            # Claim order: priority descending, then claim_order (two stable C-keyed sorts, cheaper
            # than a Python key building a tuple per row).
            rows.sort(key=_CLAIM_ORDER)
            rows.sort(key=_PRIORITY, reverse=True)
        owner = self.owner
        leases = [Lease(run_id, owner, epoch, stalled) for run_id, epoch, _, _, stalled in rows]
        with self._lock:
            for lease in leases:
                self._epochs[lease.run_id] = lease.epoch
            self.claims += len(leases)
            self.takeovers += reclaimed
        return leases

    def heartbeat(self) -> list[Lease]:
        """Send again the releases the store missed, then extend every held lease; returns (and
        forgets) the leases found lost meanwhile."""
        lost = self.resend_releases()
        held = self.held()
        if not held:
            return lost
        expires_at = self.clock() + self.lease_s

        def renew(conn: apsw.Connection) -> list[Lease]:
            lost: list[Lease] = []
            # In run_id order: two transactions locking rows in one order cannot deadlock.
            for lease in sorted(held, key=lambda lease: lease.run_id):
                conn.execute(
                    q.RENEW_LEASE,
                    {
                        "expires_at": expires_at,
                        "lease_s": self.lease_s,
                        "run_id": lease.run_id,
                        "owner": self.owner,
                        "epoch": lease.epoch,
                    },
                )
                if conn.changes() == 0:
                    lost.append(lease)
            return lost

        renewed_lost = write_unit(self.db, renew)
        # A lease released (or released and claimed again) by a worker between the snapshot above
        # and its renewal is not lost: the renewal finds it gone because it was given back. Only a
        # lease still held at the snapshot's epoch was taken over (a 2-runner bench of 1 ms runs
        # reported such a release as `lease_lost` once a heartbeat fell inside one).
        with self._lock:
            renewed_lost = [lease for lease in renewed_lost if self._epochs.get(lease.run_id) == lease.epoch]
            for lease in renewed_lost:
                del self._epochs[lease.run_id]
            self.lost_leases += len(renewed_lost)
        return [*lost, *renewed_lost]

    def unsettled(self) -> list[Lease]:
        """Leases given back while the store was unavailable, not yet known to be released."""
        with self._lock:
            return [Lease(run_id, self.owner, epoch) for run_id, epoch in self._unsettled.items()]

    def resend_releases(self) -> list[Lease]:
        """Send the releases the store missed again; returns those refused because another runner
        has claimed the run since (lost). A release that had landed after all (its answer was what
        got lost) is found released at its own epoch: settled, not lost."""
        pending = self.unsettled()
        if not pending:
            return []

        def resend(conn: apsw.Connection) -> list[Lease]:
            lost: list[Lease] = []
            for lease in sorted(pending, key=lambda lease: lease.run_id):
                if self._release(conn, lease.run_id, lease.epoch, None):
                    continue
                row = conn.execute(q.LEASE_OF, (lease.run_id,)).fetchall()
                if row and row[0][1] != lease.epoch:  # claimed since (a run deleted meanwhile: settled)
                    lost.append(lease)
            return lost

        lost = write_unit(self.db, resend)
        with self._lock:
            for lease in pending:
                if self._unsettled.get(lease.run_id) == lease.epoch:
                    del self._unsettled[lease.run_id]
            self.lost_leases += len(lost)
        return lost

    def missed_release(self, run_id: str, epoch: int) -> None:
        """A release of `run_id` at `epoch` did not reach the store: the heartbeat sends it again."""
        with self._lock:
            if run_id not in self._epochs:  # (held again, at a newer epoch: that claim supersedes it)
                self._unsettled[run_id] = epoch

    def mark_stalled(self, run_ids: list[str]) -> None:
        """Count this claim of each run as stalled (a worker has been on it across a heartbeat): if
        the runner dies before releasing it, the claim counts towards the poison limit."""
        held = [(run_id, self._epochs.get(run_id)) for run_id in sorted(run_ids)]

        def mark(conn: apsw.Connection) -> None:
            for run_id, epoch in held:
                if epoch is not None:
                    conn.execute(q.MARK_STALLED, {"run_id": run_id, "owner": self.owner, "epoch": epoch})

        write_unit(self.db, mark)

    def release(self, run_id: str, *, settle: dict[str, object] | None = None) -> bool:
        """Give a run back. False if it was no longer ours (not held, or held and taken over: lost).

        Without `settle` its due_at stays as is; with settle (due_at, paused, sub_run_id from its
        state) due_at is recomputed, so a run that has nothing to do is not claimed again."""
        with self._lock:
            epoch = self._epochs.pop(run_id, None)
        if epoch is None:
            return False
        # A release hands the run's slot on (a trigger locking the key's held runs): run again whole
        # on a PostgreSQL deadlock.
        try:
            released = write_unit(self.db, lambda conn: self._release(conn, run_id, epoch, settle))
        except StoreUnavailable:
            self.missed_release(run_id, epoch)
            raise
        if not released:  # held at this epoch, refused: another runner has claimed the run since
            with self._lock:
                self.lost_leases += 1
        return released

    def release_in(
        self,
        conn: apsw.Connection,
        run_id: str,
        *,
        settle: dict[str, object] | None = None,
        epoch: int | None = None,
    ) -> bool:
        """release() as the last statement of the caller's transaction (a unit of work's commit);
        the lease is forgotten here, whether or not that transaction then commits. `epoch`: the one
        held when the unit began (a unit run again after a deadlock releases at that epoch)."""
        with self._lock:
            held = self._epochs.pop(run_id, None)
        epoch = held if epoch is None else epoch
        return epoch is not None and self._release(conn, run_id, epoch, settle)

    def _release(
        self, conn: apsw.Connection, run_id: str, epoch: int, settle: dict[str, object] | None
    ) -> bool:
        params: dict[str, object] = {"run_id": run_id, "owner": self.owner, "epoch": epoch}
        sql = q.RELEASE_LEASE
        if settle is not None:
            sql = q.RELEASE_SETTLED
            params.update(settle, now=self.clock())
        conn.execute(sql, params)
        return conn.changes() == 1

    def release_all(self) -> int:
        """Release every held lease (graceful stop), and send again the releases the store missed;
        returns how many held leases were still ours."""
        self.resend_releases()
        return sum(1 for lease in self.held() if self.release(lease.run_id))


def reclaim_expired(db: Database, *, now: float | None = None) -> int:
    """Free leases whose expiry passed (their runs become claimable again); returns the count."""

    def reclaim(conn: apsw.Connection) -> int:
        conn.execute(q.RECLAIM_EXPIRED, {"now": time.time() if now is None else now, "n": RECLAIM_BATCH})
        return conn.changes()

    return write_unit(db, reclaim)


def lease_of(db: Database, run_id: str) -> tuple[str | None, int, float | None] | None:
    """(owner, epoch, expires_at) of a run, or None when the run does not exist."""
    row = db.query_one(q.LEASE_OF, (run_id,))
    return None if row is None else (row[0], int(row[1]), row[2])
