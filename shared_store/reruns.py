"""Rerun: a new queued run of the same workflow version (or the bundle's newest) with the same or
patched input, linked both ways (runs.rerun_of; the original lists its reruns through an index)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import bundles
from .db import Database
from .errors import Conflict, UnknownRun
from .run_labels import read_labels
from .run_views import input_data
from .starts import StartResult, enqueue_run, start_request


class RerunRefused(Conflict):
    """The run cannot be rerun (a scheduled parent, a media job, a workflow not from a bundle)."""


def rerun(
    db: Database,
    run_id: str,
    *,
    input_patch: dict[str, Any] | None = None,
    latest: bool = False,
    idempotency_key: str | None = None,
) -> tuple[StartResult, bundles.ResolvedWorkflow]:
    """Queue the rerun (committed when this returns). Tags, metadata, ttl and webhook target are
    the original's; `input_patch` replaces top-level input keys."""
    original = input_data(db, run_id)
    if original is None:
        raise UnknownRun(run_id)
    start = start_request(db, run_id) or {}
    if start.get("schedule"):
        raise RerunRefused("a scheduled parent is not rerun; rerun one of its children, or schedule again")
    if start.get("media"):
        raise RerunRefused("a media job is not rerun; send the media request again")
    if not original["bundle_id"] or not original["flow_id"]:
        raise RerunRefused(f"run '{run_id}' does not name a bundle's workflow ({original['workflow_id']})")
    resolved = bundles.resolve_workflow(
        db,
        bundle_id=original["bundle_id"],
        flow_id=original["flow_id"],
        bundle_version=None if latest else original["bundle_version"],
    )
    labels = replace(read_labels(db.connection(), run_id), rerun_of=run_id)
    started = enqueue_run(
        db,
        resolved=resolved,
        input_data={**original["input_data"], **(input_patch or {})},
        session_id=start.get("session_id"),
        idempotency_key=idempotency_key,
        labels=labels,
    )
    return started, resolved
