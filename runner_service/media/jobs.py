"""Executing a media job: the queued child run the API appended becomes a call to one backend, its
files become artifacts of the parent run, and the child's ledger and output record what happened.

A job interrupted by a crash is claimed again after its lease expires and retried, up to
MAX_ATTEMPTS; then it fails with the reason. Never lost silently.
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from typing import Any

import structlog
from abstractruntime.core.models import RunState, RunStatus, StepRecord, StepStatus

from shared_store import StoreError
from shared_store.codec import utc_now_iso

from ..commands import CommandContext
from .backends import Backend, BadMediaRequest, MediaFile, MediaInput, MediaOutput, Unsupported
from .defaults import apply_default
from .settings import job_models

log = structlog.get_logger("runner")

MAX_ATTEMPTS = 3
# kind -> (module, function) of runner_service.media; imported when first used (ML stacks load late).
BACKENDS: dict[str, tuple[str, str]] = {
    "tts": ("voice", "tts"),
    "transcribe": ("voice", "transcribe"),
    "image_generate": ("vision", "generate_image"),
    "image_edit": ("vision", "edit_image"),
    "video_generate": ("video", "generate_video"),
    "video_from_image": ("video", "video_from_image"),
    "music_generate": ("music", "generate_music"),
    "kg_query": ("kg", "query"),
    "prompt_cache": ("runner_service.prompt_cache", "execute"),  # where the LLM lives, not media
}
INPUT_FIELDS = ("audio_artifact", "image_artifact", "mask_artifact")
UNAVAILABLE = {
    "tts": "voice",
    "transcribe": "stt",
    "music_generate": "music",
    "kg_query": "kg",
    "prompt_cache": "prompt_cache",
}


def backend_for(kind: str) -> Backend:
    module_name, function = BACKENDS[kind]
    try:
        name = module_name if "." in module_name else f"runner_service.media.{module_name}"
        module = importlib.import_module(name)
    except ImportError as exc:  # the media extra is not installed in this runner
        prefix = UNAVAILABLE.get(kind, "image" if kind.startswith("image") else kind.split("_")[0])
        raise Unsupported(f"{prefix}_unavailable", f"{kind} needs the media extra: {exc}") from None
    return getattr(module, function)


def _inputs(ctx: CommandContext, request: dict[str, Any]) -> dict[str, MediaInput]:
    store = ctx.runtime.artifact_store
    inputs: dict[str, MediaInput] = {}
    for name in INPUT_FIELDS:
        ref = request.get(name)
        if not isinstance(ref, dict) or not ref.get("$artifact"):
            continue
        artifact = store.load(str(ref["$artifact"])) if store is not None else None
        if artifact is None:
            raise BadMediaRequest(f"{name} {ref.get('$artifact')!r} not found")
        inputs[name] = MediaInput(artifact.content, artifact.metadata.content_type)
    return inputs


def _store(
    ctx: CommandContext, file: MediaFile, *, parent: str | None, job: str, kind: str
) -> dict[str, Any]:
    store = ctx.runtime.artifact_store
    meta = store.store(
        file.data,
        content_type=file.content_type,
        run_id=parent or job,
        tags={"kind": kind, "job_run_id": job, "filename": file.filename},
        job_run_id=job if parent else None,
    )
    return {
        "$artifact": meta.artifact_id,
        "content_type": file.content_type,
        "filename": file.filename,
        "size_bytes": len(file.data),
        "sha256": hashlib.sha256(file.data).hexdigest(),
    }


def _output(ctx: CommandContext, result: MediaOutput, *, parent: str | None, job: str, kind: str) -> dict:
    output: dict[str, Any] = {"ok": True, "supported": True, **result.fields}
    for file in result.files:
        ref = _store(ctx, file, parent=parent, job=job, kind=kind)
        if file.role.endswith(
            "s"
        ):  # a list role ("image_artifacts"): its first item also answers the singular
            output.setdefault(file.role, []).append(ref)
            output.setdefault(file.role[:-1], ref)
        else:
            output[file.role] = ref
    return output


def _record(run: RunState, status: StepStatus, kind: str, attempt: int, **fields: Any) -> StepRecord:
    now = utc_now_iso()
    return StepRecord(
        run_id=run.run_id,
        step_id=str(uuid.uuid4()),
        node_id=kind,
        status=status,
        started_at=now,
        ended_at=None if status == StepStatus.STARTED else now,
        session_id=run.session_id,
        attempt=attempt,
        **fields,
    )


def execute_job(ctx: CommandContext, run_id: str, start: dict[str, Any]) -> None:
    """Run (or re-run after a crash) the media job of this claimed child run to its end."""
    media = start.get("media") or {}
    kind = str(media.get("kind") or "")
    request = dict(media.get("request") or {})
    parent = start.get("parent_run_id")
    run = ctx.run_store.load(run_id)
    if run is None:  # first attempt: the queued row becomes a RUNNING child run
        run = RunState(
            run_id=run_id,
            workflow_id=str(start.get("workflow_id") or f"media:{kind}"),
            status=RunStatus.RUNNING,
            current_node=kind,
            vars={"media": {"kind": kind, "request_id": media.get("request_id")}, "_job": {"attempts": 0}},
            session_id=start.get("session_id"),
            parent_run_id=parent,
        )
        run, _ = ctx.run_store.create_if_absent(run)
    if run.status != RunStatus.RUNNING:
        return
    job = run.vars.setdefault("_job", {"attempts": 0})
    job["attempts"] = attempt = int(job.get("attempts", 0)) + 1
    if attempt > MAX_ATTEMPTS:
        _finish(ctx, run, kind, attempt, None, f"{kind} job interrupted {MAX_ATTEMPTS} times; giving up")
        return
    run.updated_at = utc_now_iso()
    effect = {"type": "media", "payload": {"kind": kind, "request_id": media.get("request_id")}}
    ctx.runtime.ledger_store.append(_record(run, StepStatus.STARTED, kind, attempt, effect=effect))
    # The attempt counts before the work (a crash mid-call is retried, bounded), and its STARTED
    # record commits with it: both before the backend runs (seconds), so readers see the job start.
    ctx.run_store.save(run)
    ctx.unit.flush()  # a held run's save is staged: commit it now, the backend call may take seconds
    log.info("media_job_started", run_id=run_id, kind=kind, parent_run_id=parent, attempt=attempt)
    try:
        request, models, default = apply_default(ctx.db, kind, request)
        if default is not None:
            log.info("media_job_default", run_id=run_id, route=default.route, provider=default.provider)
        inputs = _inputs(ctx, request)  # a missing input fails the job whatever the backend
        with job_models(models):
            result = backend_for(kind)(request, inputs)
        output = _output(ctx, result, parent=parent, job=run_id, kind=kind)
        _finish(ctx, run, kind, attempt, output, None)
    except Unsupported as exc:
        output = {"ok": False, "supported": False, "code": exc.code, "error": exc.error}
        _finish(ctx, run, kind, attempt, output, None)
    except BadMediaRequest as exc:
        _finish(ctx, run, kind, attempt, None, f"bad {kind} request: {exc}")
    except StoreError:
        raise  # the store failing (lease lost, disk full) is not the job's fault
    except Exception as exc:  # a backend failing fails the job, with the reason; the runner goes on
        log.exception("media_job_failed", run_id=run_id, kind=kind)
        _finish(ctx, run, kind, attempt, None, f"{kind} failed: {type(exc).__name__}: {exc}")


def _finish(
    ctx: CommandContext, run: RunState, kind: str, attempt: int, output: dict | None, error: str | None
) -> None:
    """The closing record and the terminal state commit in one transaction (the worker's unit)."""
    if error is None:
        record = _record(run, StepStatus.COMPLETED, kind, attempt, result=output)
        run.status, run.output, run.error = RunStatus.COMPLETED, output, None
    else:
        record = _record(run, StepStatus.FAILED, kind, attempt, error=error)
        run.status, run.output, run.error = (
            RunStatus.FAILED,
            {"ok": False, "supported": True, "error": error},
            error,
        )
    run.updated_at = utc_now_iso()
    # The closing record, the output's artifacts (staged by _store) and the terminal state: one unit.
    ctx.runtime.ledger_store.append(record)
    ctx.run_store.save(run)
    log.info("media_job_finished", run_id=run.run_id, kind=kind, status=run.status.value, error=error)
