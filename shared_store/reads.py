"""Reads the API serves straight from the store, without abstractruntime: ledger pages, queue depth."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from . import queries as q
from .codec import decode
from .db import Database


@dataclass(frozen=True)
class LedgerPage:
    """Records after a cursor, as stored JSON bytes (ready to splice into a response)."""

    records: list[bytes]
    next_after: int


def ledger_page(db: Database, run_id: str, *, after: int = 0, limit: int = 1000) -> LedgerPage:
    """Records with seq > after, oldest first: one range read on the (run_id, seq) key.

    `after` counts records already consumed; seqs are dense from 1, so next_after is the last seq."""
    if after < 0:
        raise ValueError(f"after must be >= 0, not {after}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")
    rows = db.query(q.LEDGER_PAGE, (run_id, after, limit))
    return LedgerPage([bytes(record) for _, record in rows], int(rows[-1][0]) if rows else after)


def ledger_len(db: Database, run_id: str) -> int | None:
    """How many records the run's ledger has, or None for an unknown run."""
    row = db.query_one(q.LEDGER_LEN, (run_id,))
    return None if row is None else int(row[0])


def queue_depth(db: Database, *, now: float | None = None) -> int:
    """Runs due and waiting for a runner to claim them."""
    row = db.query_one(q.QUEUE_DEPTH, (time.time() if now is None else now,))
    return int(row[0]) if row else 0


def run_session(db: Database, run_id: str) -> tuple[bool, str | None]:
    """(the run exists, its session id)."""
    row = db.query_one(q.RUN_SESSION, (run_id,))
    return (False, None) if row is None else (True, row[0])


# One statement for every (bundle_id, bundle_version) asked (a JSON array of pairs), on the
# primary key: health used to run one query per flows-dir file.
BUNDLE_SOURCES = (
    "SELECT b.bundle_id, b.bundle_version, b.source, b.sha256 FROM json_each(?1) AS j "
    "JOIN bundles AS b ON b.bundle_id = j.value ->> 0 AND b.bundle_version = j.value ->> 1 "
    "WHERE b.removed_at IS NULL"
)


def bundle_sources(db: Database, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(bundle_id, version) -> (source, sha256) of the live bundles among `keys`."""
    if not keys:
        return {}
    rows = db.query(BUNDLE_SOURCES, (msgspec.json.encode(keys).decode(),))
    return {(str(bid), str(ver)): (str(source), str(sha)) for bid, ver, source, sha in rows}


_MANIFEST = "SELECT manifest FROM bundles WHERE bundle_id = ? AND bundle_version = ? AND removed_at IS NULL"


def bundle_manifest(db: Database, bundle_id: str, bundle_version: str) -> dict[str, Any] | None:
    """The manifest of one live stored version (a primary-key read), or None."""
    row = db.query_one(_MANIFEST, (bundle_id, bundle_version))
    return None if row is None else decode(row[0])
