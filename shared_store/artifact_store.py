"""abstractruntime's ArtifactStore: bytes content-addressed by sha256, metadata in the store.

The bytes live where the store's backend puts them (shared_store/blob_store.py): files under the data
dir with SQLite, the shared database with PostgreSQL. A blob is put (and committed) before its
metadata row commits, so a committed row always points at complete bytes; a crash in between leaves
only an unreferenced blob.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from abstractruntime.storage.artifacts import (
    Artifact,
    ArtifactDescriptor,
    ArtifactMetadata,
    ArtifactStore,
    compute_artifact_id,
    compute_blob_id,
    validate_artifact_id,
)

from . import queries as q
from .blob_store import Blobs, blobs_for
from .codec import decode, encode
from .db import Database
from .leases import LeaseHolder
from .run_unit import RunUnit


class SqliteArtifactStore(ArtifactStore):  # type: ignore[misc]  # abstractruntime ships no types
    def __init__(
        self,
        db: Database,
        blob_dir: str | os.PathLike[str],
        *,
        fence: LeaseHolder | None = None,
        unit: RunUnit | None = None,
    ) -> None:
        self.db = db
        self.blob_dir = Path(blob_dir)
        self.blobs: Blobs = blobs_for(db, self.blob_dir)
        self.fence = fence
        # The runner's unit of work: a run's artifact row commits with the run's next save (its
        # blob is on disk first, so a committed row always points at complete bytes).
        self.unit = unit

    def _row(self, sql: str, artifact_id: str) -> tuple[str, bytes] | None:
        """(blob_id, metadata JSON) of an artifact: staged in the unit (read your writes), or stored."""
        staged = self.unit.staged_artifact(artifact_id) if self.unit is not None else None
        if staged is not None:
            return str(staged["blob_id"]), staged["metadata"]
        row = self.db.query_one(sql, (artifact_id,))
        return None if row is None else (str(row[0]), row[1])

    def blob_path(self, blob_id: str) -> Path:
        """Where a SQLite gateway keeps the bytes (a PostgreSQL one keeps none on disk)."""
        return self.blob_dir / blob_id[:2] / blob_id

    def store(
        self,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        descriptor: ArtifactDescriptor | dict[str, Any] | None = None,
        artifact_id: str | None = None,
        job_run_id: str | None = None,
    ) -> ArtifactMetadata:
        """Store bytes + metadata. job_run_id: an artifact of run_id made by a job run this runner
        holds (media results are artifacts of the parent run): the job's lease is the fence."""
        content = bytes(content)
        artifact_id = artifact_id or compute_artifact_id(content, run_id=run_id)
        validate_artifact_id(artifact_id)
        blob_id = compute_blob_id(content)
        if isinstance(descriptor, ArtifactDescriptor):
            descriptor = descriptor.to_dict()
        # from_dict normalises tags, metadata and the descriptor the way abstractruntime's stores do.
        meta = ArtifactMetadata.from_dict(
            {
                "artifact_id": artifact_id,
                "blob_id": blob_id,
                "content_type": content_type,
                "size_bytes": len(content),
                "created_at": datetime.now(UTC).isoformat(),
                "run_id": run_id,
                "tags": tags or {},
                "metadata": metadata or {},
                "descriptor": descriptor,
            }
        )
        self.blobs.put(blob_id, content)
        params: dict[str, Any] = {
            "artifact_id": artifact_id,
            "run_id": run_id,
            "blob_id": blob_id,
            "content_type": content_type,
            "size_bytes": len(content),
            "created_at": meta.created_at,
            "metadata": encode(meta.to_dict()),
        }
        sql = q.STORE_ARTIFACT
        fenced_on = job_run_id or run_id
        if self.unit is not None and fenced_on:
            if job_run_id:
                params["job_run_id"] = job_run_id
            self.unit.stage_artifact(fenced_on, params)
            return meta
        if self.fence is not None and job_run_id:
            sql = q.STORE_ARTIFACT_FOR_JOB
            params.update(self.fence.params(job_run_id), job_run_id=job_run_id)
        elif self.fence is not None and run_id:
            sql = q.STORE_ARTIFACT_FENCED
            params.update(self.fence.params(run_id))
        with self.db.write() as conn:
            conn.execute(sql, params)
            if conn.changes() == 0:
                raise (
                    self.fence.lost(fenced_on)
                    if self.fence and fenced_on
                    else RuntimeError("artifact not stored")
                )
        return meta

    def store_copy(self, like: ArtifactMetadata, content: bytes, *, run_id: str) -> ArtifactMetadata:
        """The bytes `like` describes (stored by store(), blob on disk) as an artifact of another
        run this runner holds: its own id, the same blob, tags and metadata. What a run's workflow
        snapshot costs after the first run of a workflow: one staged row, no normalisation.
        (Retention may have removed the blob with the last row using it: then it is stored again.)"""
        if like.blob_id is None or not self.blobs.touch(like.blob_id):
            return self.store(content, content_type=like.content_type, run_id=run_id, tags=like.tags)
        artifact_id = compute_artifact_id(content, run_id=run_id)
        meta = dataclasses.replace(
            like, artifact_id=artifact_id, run_id=run_id, created_at=datetime.now(UTC).isoformat()
        )
        params: dict[str, Any] = {
            "artifact_id": artifact_id,
            "run_id": run_id,
            "blob_id": meta.blob_id,
            "content_type": meta.content_type,
            "size_bytes": meta.size_bytes,
            "created_at": meta.created_at,
            "metadata": encode(meta.to_dict()),
        }
        if self.unit is not None:
            self.unit.stage_artifact(run_id, params)
            return meta
        sql = q.STORE_ARTIFACT_FENCED if self.fence is not None else q.STORE_ARTIFACT
        if self.fence is not None:
            params.update(self.fence.params(run_id))
        with self.db.write() as conn:
            conn.execute(sql, params)
            if conn.changes() == 0 and self.fence is not None:
                raise self.fence.lost(run_id)
        return meta

    def load(self, artifact_id: str) -> Artifact | None:
        row = self._row(q.ARTIFACT_BLOB, artifact_id)
        if row is None:
            return None
        content = self.blobs.get(row[0])
        if content is None:
            return None
        return Artifact(metadata=ArtifactMetadata.from_dict(decode(row[1])), content=content)

    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        row = self._row(q.ARTIFACT_BLOB, artifact_id)
        return None if row is None else ArtifactMetadata.from_dict(decode(row[1]))

    def content_path(self, artifact_id: str) -> Path | None:
        row = self._row(q.ARTIFACT_BLOB, artifact_id)
        return None if row is None else self.blobs.path(row[0])

    def exists(self, artifact_id: str) -> bool:
        return self._row(q.ARTIFACT_BLOB, artifact_id) is not None

    def delete(self, artifact_id: str) -> bool:
        with self.db.write() as conn:
            row: Any = conn.execute(q.DELETE_ARTIFACT, (artifact_id,)).fetchone()
        if row is not None:
            self.blobs.delete_unreferenced(str(row[0]))  # after the commit: bytes go only unreferenced
        return row is not None

    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        return [
            ArtifactMetadata.from_dict(decode(r[0])) for r in self.db.query(q.ARTIFACTS_OF_RUN, (run_id,))
        ]

    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        lim = limit if limit > 0 else 2**62  # no limit, in a LIMIT both dialects take
        return [ArtifactMetadata.from_dict(decode(r[0])) for r in self.db.query(q.ARTIFACTS_ALL, (lim,))]
