"""The client's view of runs (CONTRACT: Runs), read without abstractruntime.

A view is built from the hot `runs` row plus the parts of the RunState document it needs, decoded with
msgspec into small Structs that skip everything else (a run's `vars` can be large). Stored statuses
map to client ones: a queued run reads "running" with `queued: true`; COMPLETED whose output says
`success: false` reads "failed".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from . import queries as q
from . import run_labels as labels
from .codec import decode
from .db import Database
from .flow_control import flow_view, live_label_sets
from .schedules import get_schedule
from .starts import GATEWAY_ACTOR

TERMINAL = ("completed", "failed", "cancelled")
# abstractruntime's closing `abstract.status` record carries this idempotency key prefix.
STATUS_RECORD_KEY = "system:terminal_status:"


class _Control(msgspec.Struct):
    pause_reason: Any = None
    paused_at: Any = None
    resumed_at: Any = None


class _Runtime(msgspec.Struct):
    control: _Control | None = None


class _Vars(msgspec.Struct, rename={"runtime": "_runtime"}):
    runtime: _Runtime | None = None


class _Waiting(msgspec.Struct):
    reason: str = ""
    wait_key: str | None = None
    until: str | None = None
    prompt: str | None = None
    choices: Any = None
    allow_free_text: bool = True
    details: Any = None


class _RunDoc(msgspec.Struct):
    actor_id: str | None = None
    vars: _Vars | None = None
    waiting: _Waiting | None = None
    output: Any = None
    error: str | None = None


_doc_decoder = msgspec.json.Decoder(_RunDoc)


def _decode_doc(data: bytes | None) -> _RunDoc:
    if not data:
        return _RunDoc()
    try:
        return _doc_decoder.decode(data)
    except msgspec.ValidationError:
        # A field outside its usual type (vars not an object, ...): keep what still fits.
        plain = decode(data)
        if not isinstance(plain, dict):
            return _RunDoc()
        waiting = plain.get("waiting")
        error = plain.get("error")
        return _RunDoc(
            waiting=_Waiting(**{k: v for k, v in waiting.items() if k in _Waiting.__struct_fields__})
            if isinstance(waiting, dict)
            else None,
            output=plain.get("output"),
            error=None if error is None else str(error),
            actor_id=plain.get("actor_id") if isinstance(plain.get("actor_id"), str) else None,
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def client_status(status: str, output_failed: bool) -> str:
    if status == "queued":
        return "running"
    return "failed" if status == "completed" and output_failed else status


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    (run_id, workflow_id, status, node, created, updated, session, parent, paused, failed, length, doc) = row
    run = _decode_doc(doc)
    shown = client_status(status, bool(failed))
    error = run.error
    if shown == "failed" and not error and isinstance(run.output, dict) and run.output.get("error"):
        error = str(run.output["error"])
    control = run.vars.runtime.control if run.vars and run.vars.runtime else None
    reason = control.pause_reason if control and paused else None
    wait = run.waiting if status == "waiting" else None
    # A queued run has no RunState yet; the runner starts it as the gateway's actor.
    actor = GATEWAY_ACTOR if status == "queued" else run.actor_id
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "status": shown,
        "queued": status == "queued",
        "current_node": node,
        "created_at": created,
        "updated_at": updated,
        "session_id": session,
        "actor_id": actor,
        "parent_run_id": parent,
        "error": error,
        "paused": bool(paused),
        "pause_reason": None if reason is None else str(reason),
        # abstractruntime's pause/resume stamps (the original shows them): the last of each.
        "paused_at": _text(control.paused_at) if control else None,
        "resumed_at": _text(control.resumed_at) if control else None,
        "waiting": None if wait is None else msgspec.structs.asdict(wait),
        "output": run.output,
        "is_scheduled": False,
        "schedule": None,
        "ledger_len": int(length),
    }


def _with_schedule(db: Database, view: dict[str, Any]) -> dict[str, Any]:
    schedule = get_schedule(db, view["run_id"])
    if schedule is not None:
        view["is_scheduled"] = True
        view["schedule"] = schedule.to_json()
    return view


def _with_flow(
    db: Database, view: dict[str, Any], label_sets: Callable[[], list[list[str]]]
) -> dict[str, Any]:
    """Priority, concurrency key, required labels and why the run is not running (flow_control)."""
    view.update(flow_view(db, view["run_id"], label_sets))
    return view


def run_view(db: Database, run_id: str) -> dict[str, Any] | None:
    """The contract's run detail, or None for an unknown run."""
    row = db.query_one(q.RUN_VIEW, (run_id,))
    return (
        None
        if row is None
        else _with_labels(db, _with_flow(db, _with_schedule(db, _view(row)), live_label_sets(db)))
    )


def _with_labels(db: Database, view: dict[str, Any]) -> dict[str, Any]:
    """Tags, metadata and the rerun links, both ways."""
    row = db.query_one(labels.RUN_LABELS, (view["run_id"],))
    tags, metadata, rerun_of = row if row else (None, None, None)
    view["tags"] = decode(tags) if tags else []
    view["metadata"] = decode(metadata) if metadata else {}
    view["rerun_of"] = rerun_of
    view["reruns"] = [run_id for (run_id,) in db.query(labels.RERUNS_OF, (view["run_id"],))]
    return view


def _split_workflow(workflow_id: str) -> tuple[str | None, str | None, str | None]:
    """`bundle@version:flow` -> (bundle, version, flow); parts that are not there are None."""
    ref, sep, flow = workflow_id.rpartition(":")
    if not sep:
        return None, None, workflow_id or None
    bundle, _, version = ref.partition("@")
    return bundle or None, version or None, flow or None


def input_data(db: Database, run_id: str) -> dict[str, Any] | None:
    """What the run was started with: the start request, or the run's own vars for a run a runner
    created (a child run); None for an unknown run."""
    row = db.query_one(q.RUN_INPUT, (run_id,))
    if row is None:
        return None
    workflow_id, start_json, run_json = row
    bundle_id, bundle_version, flow_id = _split_workflow(workflow_id)
    start = decode(start_json) if start_json else None
    if isinstance(start, dict):
        data = start.get("input_data") or {}
        bundle_id = start.get("bundle_id", bundle_id)
        bundle_version = start.get("bundle_version", bundle_version)
        flow_id = start.get("flow_id", flow_id)
    else:
        state = decode(run_json) if run_json else {}
        run_vars = state.get("vars") if isinstance(state, dict) else None
        data = (
            {k: v for k, v in run_vars.items() if not k.startswith("_")} if isinstance(run_vars, dict) else {}
        )
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "bundle_id": bundle_id,
        "bundle_version": bundle_version,
        "flow_id": flow_id,
        "input_data": data,
    }


# "All of them" as a LIMIT both dialects take (SQLite's LIMIT -1 is an error on PostgreSQL).
NO_LIMIT = 2**62


def run_artifacts(db: Database, run_id: str, *, limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
    """The run's artifacts index (metadata only), oldest first; limit -1: all of them."""
    limit = limit if limit >= 0 else NO_LIMIT
    items = []
    for (metadata,) in db.query(q.ARTIFACTS_PAGE_OF_RUN, (run_id, limit, offset)):
        meta = decode(metadata)
        items.append(
            {
                "artifact_id": meta.get("artifact_id"),
                "run_id": meta.get("run_id"),
                "content_type": meta.get("content_type") or "application/octet-stream",
                "size_bytes": int(meta.get("size_bytes") or 0),
                "created_at": meta.get("created_at") or "",
                "tags": meta.get("tags") or {},
            }
        )
    return items


@dataclass(frozen=True)
class ArtifactBlob:
    run_id: str | None
    blob_id: str
    content_type: str
    size_bytes: int


def artifact_blob(db: Database, artifact_id: str) -> ArtifactBlob | None:
    row = db.query_one(q.ARTIFACT_OF, (artifact_id,))
    return None if row is None else ArtifactBlob(row[0], row[1], row[2], int(row[3]))


def _ledger(db: Database, run_id: str) -> list[msgspec.Raw]:
    return [msgspec.Raw(bytes(record)) for (record,) in db.query(q.LIST_LEDGER, (run_id,))]


def history_bundle(db: Database, run_id: str, *, max_children: int = 1_000) -> dict[str, Any] | None:
    """One document to reconstruct a run offline: view, input, ledger, descendants, artifacts.

    Ledger records are spliced in as stored (msgspec.Raw): encode the result with msgspec."""
    view = run_view(db, run_id)
    if view is None:
        return None
    children = []
    artifacts = run_artifacts(db, run_id)
    for (child_id,) in db.query(q.RUN_DESCENDANTS, {"run_id": run_id, "limit": max_children}):
        child = run_view(db, child_id)
        if child is not None:
            children.append({"run": child, "ledger": _ledger(db, child_id)})
            artifacts.extend(run_artifacts(db, child_id))
    return {
        "format": "abstractgateway.history_bundle/1",
        "exported_at": datetime.now(UTC).isoformat(),
        "run": view,
        "input": input_data(db, run_id),
        "ledger": _ledger(db, run_id),
        "children": children,
        "artifacts": artifacts,
    }


@dataclass(frozen=True)
class RunProgress:
    """How far a run is, from its hot row: what an SSE stream needs to decide it is done."""

    status: str  # client status
    ledger_len: int
    terminal: bool
    updated_at: str


def run_progress(db: Database, run_id: str) -> RunProgress | None:
    row = db.query_one(q.RUN_PROGRESS, (run_id,))
    if row is None:
        return None
    status, length, failed, updated = row
    return RunProgress(client_status(status, bool(failed)), int(length), status in TERMINAL, updated)


def ends_with_status_record(db: Database, run_id: str, ledger_len: int) -> bool:
    """Whether the run's last record is the runtime's closing status record (nothing follows it)."""
    if ledger_len < 1:
        return False
    row = db.query_one(q.LEDGER_KEY_AT, (run_id, ledger_len))
    return bool(row and row[0] and str(row[0]).startswith(STATUS_RECORD_KEY))
