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


WebhookEvent = Literal["run.completed", "run.failed", "run.cancelled", "run.waiting"]


class WebhookRequest(Struct, forbid_unknown_fields=True):
    """`workflow_id` matches runs whose workflow_id starts with it (`bundle@` for every version);
    `tag` runs carrying that tag."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    events: Annotated[list[WebhookEvent], Meta(min_length=1, max_length=4)]
    workflow_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    tag: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


class Webhook(Struct):
    webhook_id: str
    url: str
    events: list[str]
    workflow_id: str | None
    tag: str | None
    created_at: str
    secrets_active: int
    secret: str | None = None  # shown once: when created or rotated


class WebhookList(Struct):
    items: list[Webhook]
    start_secret: str  # signs deliveries to a start's own webhook_url


class WebhookSecret(Struct):
    webhook_id: str
    secret: str


class WebhookDeleted(Struct):
    deleted: bool


class Delivery(Struct):
    delivery_id: str
    webhook_id: str | None
    run_id: str
    event: str
    url: str
    status: Literal["pending", "delivered", "failed", "refused", "cancelled"]
    attempts: int
    next_attempt_at: float
    retry_until: float
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str


class DeliveryList(Struct):
    items: list[Delivery]


class DeliveryQuery(Struct, forbid_unknown_fields=True):
    limit: Annotated[int, Meta(ge=1, le=2**63 - 1)] = 100
