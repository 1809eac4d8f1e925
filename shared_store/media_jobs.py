"""Media jobs: the API appends one as a queued child run of the target run; a runner executes it.

API-safe (no abstractruntime, no ML). A job is a run with workflow_id `media:<kind>` (or `kg:query`,
`llm:prompt_cache`), parent_run_id = the target run (if any), and the request in run_states.start_json;
its results are artifacts of the parent run and its output (`ok`, artifact refs, ...) is what the API
answers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apsw

from . import queries as q
from .codec import decode, encode
from .db import Database
from .errors import NotFound, UnknownRun
from .flow_control import FlowSettings, apply_at_enqueue
from .ids import new_run_id
from .postgres.retry import write_unit
from .starts import IdempotencyConflict, StartResult, bind_start_key

MEDIA_KINDS = (
    "tts",
    "transcribe",
    "image_generate",
    "image_edit",
    "video_generate",
    "video_from_image",
    "music_generate",
)
KG_QUERY = "kg_query"
PROMPT_CACHE = "prompt_cache"  # a prompt-cache control operation, run where the LLM lives
TERMINAL = ("completed", "failed", "cancelled")


class UnknownArtifact(NotFound):
    """An input artifact id that does not exist (the API answers 400: no job created)."""


@dataclass(frozen=True)
class ArtifactRef:
    artifact_id: str
    run_id: str | None
    content_type: str
    size_bytes: int


def workflow_id_of(kind: str) -> str:
    return {KG_QUERY: "kg:query", PROMPT_CACHE: "llm:prompt_cache"}.get(kind, f"media:{kind}")


def artifact_ref(db: Database, artifact_id: str) -> ArtifactRef:
    row = db.query_one(q.ARTIFACT_REF, (artifact_id,))
    if row is None:
        raise UnknownArtifact(f"artifact {artifact_id!r} not found")
    return ArtifactRef(str(row[0]), row[1], str(row[2]), int(row[3]))


def enqueue_media_job(
    db: Database,
    *,
    kind: str,
    request: dict[str, Any],
    parent_run_id: str | None,
    request_id: str | None = None,
    http_request_id: str | None = None,
    requires: list[str] | None = None,
) -> StartResult:
    """Commit a queued job run (child of parent_run_id when given); idempotent by request_id.

    `http_request_id` (the API request's X-Request-ID) rides along for the runner's log lines; it is
    not part of what request_id's idempotency compares. `requires`: the runner labels the operator
    says this kind needs (ABSTRACTGATEWAY_MEDIA_REQUIRES)."""
    if kind not in (*MEDIA_KINDS, KG_QUERY, PROMPT_CACHE):
        raise ValueError(f"unknown media kind {kind!r}")
    now = time.time()
    created_at = datetime.now(UTC).isoformat()
    run_id = new_run_id()

    def enqueue(conn: apsw.Connection) -> StartResult:
        session_id = None
        if parent_run_id is not None:
            parent = conn.execute(q.RUN_SCOPE, (parent_run_id,)).fetchone()
            if parent is None:
                raise UnknownRun(parent_run_id)
            session_id = parent[0]
        start = {
            "workflow_id": workflow_id_of(kind),
            "media": {"kind": kind, "request": request, "request_id": request_id},
            "session_id": session_id,
            "parent_run_id": parent_run_id,
        }
        digest = hashlib.sha256(encode(start)).hexdigest()
        start_json = encode({**start, "request_id": http_request_id} if http_request_id else start)
        if request_id is not None:
            key = f"media:{parent_run_id}:{kind}:{request_id}"
            key_params = {
                "idempotency_key": key,
                "run_id": run_id,
                "request_sha256": digest,
                "created_at": created_at,
            }
            row = bind_start_key(conn, key, key_params)
            if row is not None:  # the first request with this request_id (concurrent or not) won
                if row[1] != digest:
                    raise IdempotencyConflict(
                        f"request_id {request_id!r} was used for a different {kind} request"
                    )
                return StartResult(str(row[0]), created=False)
        conn.execute(
            q.ENQUEUE_RUN,
            {
                "run_id": run_id,
                "workflow_id": workflow_id_of(kind),
                "session_id": session_id,
                "parent_run_id": parent_run_id,
                "created_at": created_at,
                "now": now,
            },
        )
        conn.execute(q.ENQUEUE_RUN_STATE, {"run_id": run_id, "start_json": start_json})
        if requires:
            apply_at_enqueue(conn, run_id, FlowSettings(requires=sorted(requires)), now=now)
        return StartResult(run_id, created=True)

    return write_unit(db, enqueue)


@dataclass(frozen=True)
class JobState:
    status: str
    output: dict[str, Any] | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def job_state(db: Database, run_id: str) -> JobState | None:
    """The job run's status and, once finished, its output (what the API answers)."""
    row = db.query_one(q.JOB_STATE, (run_id,))
    if row is None:
        return None
    status, run_json = str(row[0]), row[1]
    state = decode(run_json) if run_json else {}
    output = state.get("output") if isinstance(state.get("output"), dict) else None
    return JobState(status, output, state.get("error"))
