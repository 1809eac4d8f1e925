"""Where artifact bytes live: the store's backend decides.

- SQLite (one machine): files under the data dir's artifacts/, `xx/<blob_id>`, written temp file +
  fsync + rename (FileBlobs) — the layout every SQLite gateway has always had.
- PostgreSQL (API hosts and runner hosts on different machines): rows of `artifact_blobs` in the
  shared database (DbBlobs), so an image a GPU runner stores is served by any API host, and an
  artifact one host received is read by a runner anywhere. No host's disk holds a blob.

Either way a blob is content-addressed (blob_id = sha256 of the bytes) and is put — committed on its
own — BEFORE the artifact row naming it commits: a committed row always points at complete bytes; a
crash in between leaves only an unreferenced blob, which no read ever reaches.

Deleting a blob once its last artifact row is gone (`delete_unreferenced`): on PostgreSQL many hosts
store and delete at once, under READ COMMITTED. A store that re-puts bytes already there and has not
yet committed its row is invisible to the deleter's "is it referenced?" check, so DbBlobs deletes only
blobs whose last put is older than GRACE_S; a put of bytes already there refreshes `put_at` when
it is older than half the window (so a store has at least GRACE_S / 2 between its put and its row,
and the thousands of runs that share one workflow snapshot do not all rewrite its row). Times are the
database's clock, as leases are: hosts' clocks may differ. What a crashed store leaves (bytes, no row)
is collected by `sweep_orphans` once past the same window.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from .db import Database
from .private import private_dir

# A store puts its blob, then commits the artifact row: at once (API, tools), or with the runner's
# next save after the effect that stored it returns (an LLM or media call of minutes). Half an hour
# (GRACE_S / 2, see the module docstring) covers that lag with room; orphans wait an hour.
GRACE_S = 3600.0
# A download streams a database blob in pieces of this size (one query each): a 500 MB video
# never sits whole in an API process's memory.
CHUNK = 1 << 20
SWEEP_BATCH = 100

_REFERENCED = "SELECT 1 FROM artifacts INDEXED BY artifacts_blob WHERE blob_id = ? LIMIT 1"
# DbBlobs' statements (PostgreSQL; dialect.respell spells the placeholders). put_at is the database's
# clock in unix seconds.
_NOW = "extract(epoch FROM clock_timestamp())"
_FRESH = f"SELECT put_at > {_NOW} - ? FROM artifact_blobs WHERE blob_id = ?"
_TOUCH = f"UPDATE artifact_blobs SET put_at = {_NOW} WHERE blob_id = ?"
_PUT = (
    "INSERT INTO artifact_blobs (blob_id, content, size_bytes, created_at, put_at) "
    f"VALUES (?, ?, ?, ?, {_NOW}) ON CONFLICT (blob_id) DO UPDATE SET put_at = excluded.put_at"
)
_GET = "SELECT content FROM artifact_blobs WHERE blob_id = ?"
_SIZE = "SELECT size_bytes FROM artifact_blobs WHERE blob_id = ?"
_PIECE = "SELECT substr(content, ?, ?) FROM artifact_blobs WHERE blob_id = ?"
_DELETE_UNREFERENCED = (
    f"DELETE FROM artifact_blobs WHERE blob_id = ? AND put_at < {_NOW} - ? "
    "AND NOT EXISTS (SELECT 1 FROM artifacts WHERE artifacts.blob_id = ?)"
)
_ORPHANS = (
    f"SELECT blob_id FROM artifact_blobs WHERE put_at < {_NOW} - ? "
    "AND NOT EXISTS (SELECT 1 FROM artifacts WHERE artifacts.blob_id = artifact_blobs.blob_id) "
    "ORDER BY put_at LIMIT ?"
)


class Blobs(Protocol):
    """Content-addressed artifact bytes (see the module docstring)."""

    def put(self, blob_id: str, content: bytes) -> None:
        """Store the bytes (committed when this returns); bytes already there are kept, refreshed."""

    def touch(self, blob_id: str) -> bool:
        """Whether the bytes are there; if so, they count as just put (kept through a grace window)."""

    def get(self, blob_id: str) -> bytes | None: ...

    def exists(self, blob_id: str) -> bool: ...

    def size(self, blob_id: str) -> int | None: ...

    def chunks(self, blob_id: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes in pieces (a download); stops early if the blob is deleted meanwhile."""

    def path(self, blob_id: str) -> Path | None:
        """A local file holding the bytes, when the backend keeps files (None on PostgreSQL)."""

    def delete_unreferenced(self, blob_id: str) -> bool:
        """Delete the bytes if no artifact row names them (call after the row's delete committed)."""

    def sweep_orphans(self, limit: int = SWEEP_BATCH) -> int:
        """Delete up to `limit` blobs no row names, put over the grace window ago; how many went."""


def write_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` whole or not at all: `fill` writes a private temp file beside it (mkstemp: mode
    0600), fsync'd, then renamed over it; a failure leaves no temp file behind."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def blobs_for(db: Database, artifacts_dir: str | os.PathLike[str] | None) -> Blobs:
    """The blob store that follows `db`'s backend: the shared database for PostgreSQL, else the files
    under `artifacts_dir` (this host's data dir)."""
    if db.backend == "postgresql":
        return DbBlobs(db)
    if artifacts_dir is None:
        raise ValueError("a SQLite gateway keeps artifact bytes in files: artifacts_dir is needed")
    return FileBlobs(db, Path(artifacts_dir))


class FileBlobs:
    """Bytes as files `root/xx/<blob_id>` (SQLite: every process shares this host's data dir)."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        self._root = str(root)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def put(self, blob_id: str, content: bytes) -> None:
        path = self.path(blob_id)
        if path.exists():
            return
        write_atomically(path, lambda fh: fh.write(content))

    def touch(self, blob_id: str) -> bool:
        return self.exists(blob_id)

    def get(self, blob_id: str) -> bytes | None:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, blob_id: str) -> bool:
        # A runner touches its workflow snapshot's blob at every start: a stat by name, not a Path
        # built and asked (pathlib's joins and is_file: ~25 us of a bench-echo run).
        return os.path.isfile(os.path.join(self._root, blob_id[:2], blob_id))

    def size(self, blob_id: str) -> int | None:
        try:
            return self.path(blob_id).stat().st_size
        except FileNotFoundError:
            return None

    def chunks(self, blob_id: str, chunk: int = CHUNK) -> Iterator[bytes]:
        try:
            fh = self.path(blob_id).open("rb")
        except FileNotFoundError:
            return
        with fh:
            piece = fh.read(chunk)
            yield piece  # an empty blob is one empty piece: there, with no bytes
            while piece := fh.read(chunk):
                yield piece

    def delete_unreferenced(self, blob_id: str) -> bool:
        """One machine, one writer at a time: no grace window (the behaviour SQLite gateways had)."""
        if self.db.query_one(_REFERENCED, (blob_id,)) is not None:
            return False
        path = self.path(blob_id)
        if not path.exists():
            return False
        path.unlink(missing_ok=True)
        return True

    def sweep_orphans(self, limit: int = SWEEP_BATCH) -> int:
        """Files are never swept: an unreferenced file costs disk only, as it always has."""
        return 0


class DbBlobs:
    """Bytes as rows of `artifact_blobs` in the shared database (PostgreSQL)."""

    def __init__(self, db: Database, *, grace_s: float = GRACE_S) -> None:
        self.db = db
        self.grace_s = grace_s

    def path(self, blob_id: str) -> None:
        return None

    def put(self, blob_id: str, content: bytes) -> None:
        # Touch first: bytes already stored (the same image again, a retried step) are not sent
        # over the network a second time.
        if self.touch(blob_id):
            return
        created = datetime.now(UTC).isoformat()
        self.db.execute_write(_PUT, (blob_id, bytes(content), len(content), created))

    def touch(self, blob_id: str) -> bool:
        """One read when the bytes were put within half the window (the common case: a workflow
        snapshot every run of a workflow shares); a write only to refresh an older put."""
        row = self.db.query_one(_FRESH, (self.grace_s / 2, blob_id))
        if row is None:
            return False
        if row[0]:
            return True
        return self.db.execute_write(_TOUCH, (blob_id,)) > 0  # 0: deleted meanwhile, put it again

    def get(self, blob_id: str) -> bytes | None:
        return self._bytes(_GET, (blob_id,))

    def _bytes(self, sql: str, params: tuple[Any, ...]) -> bytes | None:
        """A bytea value read in binary result format: text format sends it hex-encoded, twice the
        bytes, decoded by the client (16 MiB: 478 ms as text, 118 ms as binary, measured)."""
        conn = self.db.connection()
        raw = getattr(conn, "raw", None)  # PgConnection's psycopg connection
        translate = getattr(self.db, "translate", None)
        if raw is None or translate is None:
            row = self.db.query_one(sql, params)
        else:
            from .postgres.dialect import to_pg

            with translate():
                row = raw.execute(to_pg(sql)[0], params, binary=True).fetchone()
        return None if row is None else bytes(row[0])

    def exists(self, blob_id: str) -> bool:
        return self.size(blob_id) is not None

    def size(self, blob_id: str) -> int | None:
        row = self.db.query_one(_SIZE, (blob_id,))
        return None if row is None else int(row[0])

    def chunks(self, blob_id: str, chunk: int = CHUNK) -> Iterator[bytes]:
        size = self.size(blob_id)
        if size == 0:
            yield b""  # there, with no bytes (as FileBlobs)
        offset = 0
        while size is not None and offset < size:
            piece = self._bytes(_PIECE, (offset + 1, chunk, blob_id))  # substr counts from 1
            if piece is None:
                return  # deleted meanwhile: the download ends short rather than inventing bytes
            if not piece:
                return
            yield piece
            offset += len(piece)

    def delete_unreferenced(self, blob_id: str) -> bool:
        return self.db.execute_write(_DELETE_UNREFERENCED, (blob_id, self.grace_s, blob_id)) > 0

    def sweep_orphans(self, limit: int = SWEEP_BATCH) -> int:
        orphans = [str(r[0]) for r in self.db.query(_ORPHANS, (self.grace_s, limit))]
        return sum(self.delete_unreferenced(blob_id) for blob_id in orphans)
