"""Retention: finished runs past their time are deleted — with their ledgers, commands, child runs,
labels and artifacts (the bytes too, once no other artifact shares them) — in bounded batches.

A run expires `retention_days` after it ended (ABSTRACTGATEWAY_RETENTION_DAYS; none when unset) or
`ttl_s` after it ended when its start said so. Only top-level runs are candidates; a run goes with
its whole tree, and only when every run of the tree is terminal and no runner holds its lease — both
checked inside the deleting transaction. A large tree goes deepest runs first, at most `batch` runs
per transaction, so no transaction holds the write lock for long; what a batch leaves is a smaller
valid tree.

Free pages: a db created by this version uses auto_vacuum=INCREMENTAL (chosen by Database when it
creates the file), and each batch is followed by `PRAGMA incremental_vacuum(N)` for a bounded N. An older db is
left in auto_vacuum=NONE: freed pages are reused by new rows (the file stops growing) but only a
one-time `abstractgateway migrate --enable-incremental-vacuum` (VACUUM, with the gateway stopped)
returns them to the OS — VACUUM rewrites the whole file under an exclusive lock, which a running
gateway must never wait on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .blob_store import Blobs, blobs_for
from .codec import encode
from .db import Database, translate_errors

TERMINAL = ("completed", "failed", "cancelled")
BATCH = 50  # runs per delete transaction: ~5-15 ms of write lock on 2 busy cores (bench_ops)
VACUUM_PAGES = 512  # pages returned to the OS per batch (2 MiB at 4 KiB pages)

# Candidates, oldest first: per terminal status through runs_status_updated (in index order), and
# runs with a ttl through runs_expiry.
_EXPIRED_BY_AGE = (
    "SELECT run_id, updated_at FROM runs INDEXED BY runs_status_updated WHERE status = :status "
    "AND updated_at < :cutoff AND parent_run_id IS NULL ORDER BY updated_at LIMIT :n"
)
_EXPIRED_BY_TTL = (
    "SELECT run_id, updated_at FROM runs INDEXED BY runs_expiry WHERE expires_at IS NOT NULL "
    "AND expires_at < :now AND parent_run_id IS NULL ORDER BY expires_at LIMIT :n"
)
# The run and its descendants, deepest first, and whether any is unfinished or held.
_TREE = (
    "WITH RECURSIVE tree(run_id, status, lease_owner, depth) AS ("
    "SELECT run_id, status, lease_owner, 0 FROM runs WHERE run_id = :root "
    "UNION ALL SELECT r.run_id, r.status, r.lease_owner, t.depth + 1 FROM tree t "
    "JOIN runs r INDEXED BY runs_parent ON r.parent_run_id = t.run_id WHERE t.depth < 64) "
    "SELECT run_id, status, lease_owner FROM tree ORDER BY depth DESC"
)
_IDS = "(SELECT value FROM json_each(:ids))"
_DELETE = (
    f"DELETE FROM ledger WHERE run_id IN {_IDS}",
    f"DELETE FROM commands INDEXED BY commands_done_run WHERE status != 'pending' AND run_id IN {_IDS}",
    f"DELETE FROM commands INDEXED BY commands_pending WHERE status = 'pending' AND run_id IN {_IDS}",
    f"DELETE FROM run_states WHERE run_id IN {_IDS}",
    f"DELETE FROM run_tags INDEXED BY run_tags_run WHERE run_id IN {_IDS}",
    f"DELETE FROM run_metadata INDEXED BY run_metadata_run WHERE run_id IN {_IDS}",
    f"DELETE FROM run_start_keys INDEXED BY run_start_keys_run WHERE run_id IN {_IDS}",
    f"DELETE FROM schedules WHERE run_id IN {_IDS}",
    f"DELETE FROM webhook_deliveries INDEXED BY webhook_deliveries_run WHERE run_id IN {_IDS}",
)
_DELETE_ARTIFACTS = f"DELETE FROM artifacts WHERE run_id IN {_IDS} RETURNING blob_id"
# The runs themselves, guarded again: only finished, unheld ones (the check above ran in this
# same transaction, so this removes exactly those). `+`: by primary key, never walking a status index.
DELETE_RUNS = (
    f"DELETE FROM runs WHERE run_id IN {_IDS} AND +status IN ('completed', 'failed', 'cancelled') "
    "AND +lease_owner IS NULL"
)


@dataclass
class RetentionStats:
    runs_deleted: int = 0
    artifacts_deleted: int = 0
    blobs_deleted: int = 0
    pages_vacuumed: int = 0


@dataclass
class Retention:
    """The runner's retention job: `step()` deletes one batch (returns runs deleted; 0 when idle)."""

    db: Database
    artifacts_dir: Path
    retention_days: float | None = None
    batch: int = BATCH
    check_every_s: float = 2.0  # between looks when there was nothing to delete
    # Between sweeps for orphaned database blobs: each walks the blobs past the grace window whose
    # row is gone, an anti-join over artifact_blobs — not a query for every idle look.
    sweep_every_s: float = 600.0
    # After each batch: waiting writers (API appends, other runners) get the lock before the next
    # batch. Without it the busy handler's backoff lost every race: a 159 ms stall, measured.
    yield_s: float = 0.005
    stats: RetentionStats = field(default_factory=RetentionStats)
    _blocked: set[str] = field(default_factory=set)  # roots with a live run this pass
    _next_look: float = 0.0
    _blobs: Blobs | None = None
    _next_sweep: float = 0.0

    @property
    def blobs(self) -> Blobs:
        """The bytes follow the backend (shared_store/blob_store.py): files here, or the database."""
        if self._blobs is None:
            self._blobs = blobs_for(self.db, self.artifacts_dir)
        return self._blobs

    def step(self) -> int:
        now = time.time()
        if now < self._next_look:
            return 0
        roots = self._candidates(now)
        if not roots:
            self._blocked.clear()
            self._next_look = now + self.check_every_s
            if now >= self._next_sweep:
                # Idle: bytes a crashed store left without their row (the database only; blob_store).
                self._next_sweep = now + self.sweep_every_s
                self.stats.blobs_deleted += self.blobs.sweep_orphans()
            return 0
        deleted = self._delete_trees(roots)
        self.stats.runs_deleted += deleted
        self.stats.pages_vacuumed += vacuum_some(self.db)
        time.sleep(self.yield_s)
        return max(deleted, 1)  # blocked roots are progress too: the next step looks further

    def _candidates(self, now: float) -> list[str]:
        n = self.batch + len(self._blocked)
        found: list[tuple[str, str]] = []
        if self.retention_days is not None:
            cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).isoformat()
            for status in TERMINAL:
                found += self.db.query(_EXPIRED_BY_AGE, {"status": status, "cutoff": cutoff, "n": n})
        found += self.db.query(_EXPIRED_BY_TTL, {"now": now, "n": n})
        ordered = sorted({run_id: updated for run_id, updated in found}.items(), key=lambda kv: kv[1])
        return [run_id for run_id, _ in ordered if run_id not in self._blocked][: self.batch]

    def _delete_trees(self, roots: list[str]) -> int:
        """Delete up to `batch` runs of the roots' trees (deepest first) in one transaction; a tree
        with a live or held run is skipped whole."""
        blobs: list[str] = []
        with self.db.write() as conn:
            ids: list[str] = []
            for root in roots:
                tree: list[Any] = conn.execute(_TREE, {"root": root}).fetchall()
                if not tree or any(status not in TERMINAL or owner is not None for _, status, owner in tree):
                    self._blocked.add(root)
                    continue
                ids += [run_id for run_id, _, _ in tree[: self.batch - len(ids)]]
                if len(ids) >= self.batch:
                    break
            if not ids:
                return 0
            params = {"ids": _json_list(ids)}
            for statement in _DELETE:
                conn.execute(statement, params)
            blobs = [str(blob) for (blob,) in conn.execute(_DELETE_ARTIFACTS, params).fetchall()]
            conn.execute(DELETE_RUNS, params)
            deleted = conn.changes()
        self.stats.artifacts_deleted += len(blobs)
        self.stats.blobs_deleted += self._unlink_unreferenced(set(blobs))
        return deleted

    def _unlink_unreferenced(self, blobs: set[str]) -> int:
        """After the commit: a blob no artifact references any more goes (a crash before this leaves
        an unreferenced blob, never a row without its bytes)."""
        return sum(self.blobs.delete_unreferenced(blob) for blob in blobs)


def _json_list(ids: list[str]) -> str:
    return encode(ids).decode()


def vacuum_some(db: Database, pages: int = VACUUM_PAGES) -> int:
    """Return up to `pages` free pages to the OS (auto_vacuum=INCREMENTAL dbs); the pages freed.
    PostgreSQL: 0, always; the server's autovacuum makes deleted rows' space reusable by itself."""
    if db.backend == "postgresql":
        return 0
    conn = db.connection()

    def one(sql: str) -> Any:
        row: Any = conn.execute(sql).fetchone()
        return row[0]

    with translate_errors(db.path):
        if one("PRAGMA auto_vacuum") != 2:
            return 0
        before = one("PRAGMA freelist_count")
        if not before:
            return 0
        conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
        return int(before - one("PRAGMA freelist_count"))


def enable_incremental_vacuum(db: Database) -> None:
    """Switch an existing db to auto_vacuum=INCREMENTAL: a full VACUUM (rewrites the file under an
    exclusive lock: run it with the gateway stopped). Nothing to do on PostgreSQL (autovacuum)."""
    if db.backend == "postgresql":
        return
    conn = db.connection()
    with translate_errors(db.path):
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
