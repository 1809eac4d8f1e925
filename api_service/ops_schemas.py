"""msgspec Structs of the operations routes: bulk commands, reruns, webhooks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

BulkId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class BulkRequest(Struct):
    """`filter` takes the runs list's filters as a JSON object (`status` and `tag` a string or a
    list, `metadata` an object); at least one is required. Runs created after the request are not
    matched."""

    bulk_id: BulkId
    type: Literal["cancel", "pause", "resume"]
    filter: dict[str, Any]
    payload: dict[str, Any] = {}


class BulkStatus(Struct):
    bulk_id: str
    type: str
    filter: dict[str, Any]
    status: Literal["expanding", "expanded"]
    matched: int  # runs the operation reached so far (final once status is expanded)
    pending: int
    applied: int
    rejected: int
    created_at: str
    updated_at: str
    duplicate: bool = False


class RerunRequest(Struct):
    """`input_data` patches the original input (top-level keys replaced); `latest` runs the newest
    version of the workflow's bundle instead of the original version."""

    input_data: dict[str, Any] | None = None
    latest: bool = False


class RerunResponse(Struct):
    run_id: str
    rerun_of: str
    resolved_workflow: dict[str, str]
