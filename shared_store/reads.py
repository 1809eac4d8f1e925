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


def _check_page(after: int, limit: int) -> None:
    if after < 0:
        raise ValueError(f"after must be >= 0, not {after}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")


def ledger_page(db: Database, run_id: str, *, after: int = 0, limit: int = 1000) -> LedgerPage:
    """Records with seq > after, oldest first: one range read on the (run_id, seq) key.

    `after` counts records already consumed; seqs are dense from 1, so next_after is the last seq."""
    _check_page(after, limit)
    rows = db.query(q.LEDGER_PAGE, (run_id, after, limit))
    return LedgerPage([bytes(record) for _, record in rows], int(rows[-1][0]) if rows else after)


def joined_ledger_page(
    db: Database, run_id: str, *, after: int = 0, limit: int = 1000
) -> tuple[bytes, int, int]:
    """The page ledger_page reads, as (its records joined by commas, next_after, how many records):
    one value from the store instead of a row per record."""
    _check_page(after, limit)
    row = db.query_one(q.LEDGER_PAGE_JOINED, (run_id, after, limit))
    if row is None or not row[2]:
        return b"", after, 0
    return bytes(row[1]), int(row[0]), int(row[2])


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


# What resolving a bundle's workflows depends on: its live versions (by sha256) and its deprecation
# marks, each a range read on its table's primary key. The API caches resolutions under it.
_LIVE_SHAS = "SELECT bundle_version, sha256 FROM bundles WHERE bundle_id = ? AND removed_at IS NULL"
_DEPRECATION_MARKS = "SELECT flow_id, reason FROM bundle_deprecations WHERE bundle_id = ?"

BundleMarker = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str | None], ...]]


def bundle_marker(db: Database, bundle_id: str) -> BundleMarker:
    """The bundle's live (version, sha256) pairs and (flow_id, reason) deprecation marks, sorted: equal
    markers, equal answers from bundles.resolve_workflow (an upload, overwrite, delete or
    (un)deprecation changes the marker; a re-import of the same bytes does not)."""
    versions = sorted((str(v), str(sha)) for v, sha in db.query(_LIVE_SHAS, (bundle_id,)))
    marks = sorted(
        (str(f), None if r is None else str(r)) for f, r in db.query(_DEPRECATION_MARKS, (bundle_id,))
    )
    return tuple(versions), tuple(marks)


_MANIFEST = "SELECT manifest FROM bundles WHERE bundle_id = ? AND bundle_version = ? AND removed_at IS NULL"


def bundle_manifest(db: Database, bundle_id: str, bundle_version: str) -> dict[str, Any] | None:
    """The manifest of one live stored version (a primary-key read), or None."""
    row = db.query_one(_MANIFEST, (bundle_id, bundle_version))
    return None if row is None else decode(row[0])
