"""Artifacts of a file-backend data dir into the db: FileArtifactStore's layout read, the bytes
copied into the content-addressed blob dir as SqliteArtifactStore lays it out, then the rows.

    artifacts/refs/<artifact_id>.meta   ArtifactMetadata JSON naming blobs/<blob_id>.bin (sha256)
    artifacts/<artifact_id>.meta|.bin   the legacy layout, still read by FileArtifactStore
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import msgspec
from abstractruntime.storage.artifacts import ArtifactMetadata, validate_artifact_id

from . import queries as q
from .blob_store import Blobs, DbBlobs, blobs_for, write_atomically
from .codec import decode, encode
from .db import Database

_CHUNK = 1 << 20


def import_artifacts(
    db: Database, source: Path, blob_dir: Path, skipped: list[str]
) -> tuple[dict[str, str], int]:
    """(artifact_id -> blob_id of every artifact read intact, rows added). A damaged metadata file or
    blob is appended to `skipped` and left out; an artifact already in the db is left as it is."""
    base = source / "artifacts"
    metas = sorted((base / "refs").glob("*.meta")) + sorted(base.glob("*.meta"))
    found: dict[str, str] = {}
    imported = 0
    blobs = blobs_for(db, blob_dir)
    for path in metas:
        try:
            meta = ArtifactMetadata.from_dict(decode(path.read_bytes()))
            validate_artifact_id(meta.artifact_id)
            if meta.blob_id:
                validate_artifact_id(meta.blob_id)  # it names a file: no path in it
        except (OSError, msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            skipped.append(f"artifacts/{path.relative_to(base)}: {_reason(exc)}")
            continue
        if meta.artifact_id in found:
            continue  # refs/ wins over the legacy copy, as in FileArtifactStore
        blob = base / "blobs" / f"{meta.blob_id}.bin" if meta.blob_id else base / f"{meta.artifact_id}.bin"
        try:
            if isinstance(blobs, DbBlobs):  # the store keeps bytes in the database (PostgreSQL)
                blob_id = put_blob(blobs, blob, expected=meta.blob_id, size=int(meta.size_bytes))
            else:
                blob_id = copy_blob(blob, blob_dir, expected=meta.blob_id, size=int(meta.size_bytes))
        except (OSError, ValueError) as exc:
            skipped.append(f"artifacts/{path.relative_to(base)}: {_reason(exc)}")
            continue
        meta.blob_id = blob_id
        found[meta.artifact_id] = blob_id
        row = {
            "artifact_id": meta.artifact_id,
            "run_id": meta.run_id,
            "blob_id": blob_id,
            "content_type": meta.content_type,
            "size_bytes": int(meta.size_bytes),
            "created_at": meta.created_at,
            "metadata": encode(meta.to_dict()),
        }
        with db.write() as conn:
            conn.execute(q.IMPORT_ARTIFACT, row)
            imported += conn.changes()
    return found, imported


def blob_path(blob_dir: Path, blob_id: str) -> Path:
    return blob_dir / blob_id[:2] / blob_id  # SqliteArtifactStore.blob_path


def copy_blob(src: Path, blob_dir: Path, *, expected: str | None, size: int) -> str:
    """Copy a blob (temp file, fsync, rename), streaming: artifacts may be large media files.

    The bytes must hash to the blob id the metadata names (the legacy layout names none: its size
    must match). A blob already in blob_dir is content-addressed, hence already right: a re-run
    does not read the source's bytes again."""
    if expected and blob_intact(blob_dir, expected, size):
        return expected
    digest, length = hashlib.sha256(), 0
    with src.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            length += len(chunk)
    blob_id = digest.hexdigest()
    if expected and blob_id != expected:
        raise ValueError(f"blob {src.name} does not hash to its id (damaged)")
    if length != size:
        raise ValueError(f"blob {src.name} has {length} bytes, metadata says {size}")
    target = blob_path(blob_dir, blob_id)
    if target.exists():
        return blob_id

    def stream(out: BinaryIO) -> None:
        with src.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                out.write(chunk)

    write_atomically(target, stream)
    return blob_id


def put_blob(blobs: Blobs, src: Path, *, expected: str | None, size: int) -> str:
    """copy_blob for a store that keeps bytes in the database: the same checks, then one put."""
    if expected and blobs.size(expected) == size:
        return expected
    content = src.read_bytes()
    blob_id = hashlib.sha256(content).hexdigest()
    if expected and blob_id != expected:
        raise ValueError(f"blob {src.name} does not hash to its id (damaged)")
    if len(content) != size:
        raise ValueError(f"blob {src.name} has {len(content)} bytes, metadata says {size}")
    if not blobs.exists(blob_id):
        blobs.put(blob_id, content)
    return blob_id


def blob_intact(blob_dir: Path, blob_id: str, size: int, blobs: Blobs | None = None) -> bool:
    if isinstance(blobs, DbBlobs):
        return blobs.size(blob_id) == size
    try:
        return blob_path(blob_dir, blob_id).stat().st_size == size
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
