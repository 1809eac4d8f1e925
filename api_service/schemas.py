"""msgspec Structs for every request and response body (and query string) of the API.

Requests are decoded straight into these (so a wrong shape is a 422 naming the field); responses are
encoded from them, or from dicts of the same shape built by the store's read side. OpenAPI's schemas
are generated from this module: change a field here and the spec follows.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct

Id = Annotated[str, Meta(min_length=1, max_length=256)]
SQLITE_MAX_INT = 2**63 - 1  # a larger int cannot be bound to a query (it would be a 500, not a 422)
# A page `limit` above the server's maximum is served up to that maximum, never refused (clients of the
# original ask `limit=10000` or more and read `items`); below 1 is a 422.
Limit = Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)]
LEDGER_PAGE_MAX = 10_000  # ledger records per page (measured: a 10,000-record page of ~300 B records
# is ~3 MB, read in one range scan)
LEDGER_BATCH_RECORDS_MAX = 100_000  # records per ledger batch, shared by its runs (500 runs x 200)
RUNS_PAGE_MAX = 10_000  # run summaries carry no output (shared_store.run_list.PAGE_MAX)
ARTIFACTS_PAGE_MAX = 10_000
Cursor = Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)]


class ErrorResponse(Struct):
    detail: Any


# --- health -------------------------------------------------------------------------------------------
class DbHealth(Struct):
    path: str
    wal: bool
    schema_version: int
    schema_latest: int
    pending_migrations: list[int]
    readable: bool = True
    error: str | None = None


class RunnerHealth(Struct):
    runner_id: str
    version: str
    host: str
    pid: int
    heartbeat_age_s: float
    labels: list[str] = []


class RunnerSupervision(Struct):
    """The runner child `serve` supervises (absent with --no-runner or outside `serve`)."""

    alive: bool
    pid: int | None
    restarts: int
    last_exit_code: int | None = None
    restart_in_s: float | None = None


class HealthResponse(Struct):
    status: Literal["healthy", "degraded", "unhealthy"]
    service: str
    version: str
    db: DbHealth
    runners: list[RunnerHealth]
    queue_depth: int | None
    problems: list[str] = []
    # Flows-dir files whose id@version is served from an upload with other content.
    shadowed_flow_files: list[str] = []
    runner_supervisor: RunnerSupervision | None = None
    # The output.text capability default: {"route", "provider", "answers": bool | None}; None: no default.
    llm: dict[str, Any] | None = None


class HealthBrief(Struct):
    """What /api/health tells a caller without a valid token: no path, host or pid."""

    status: Literal["healthy", "degraded", "unhealthy"]
    service: str


# --- bundles ------------------------------------------------------------------------------------------
class BundleListQuery(Struct, forbid_unknown_fields=True):
    all_versions: bool = False
    include_deprecated: bool = False


class BundleVersionQuery(Struct, forbid_unknown_fields=True):
    bundle_version: str | None = None


class BundleDeleteQuery(Struct, forbid_unknown_fields=True):
    bundle_version: str | None = None
    reload: bool = False  # accepted for compatibility: the db is the catalogue, nothing to reload


class EntrypointItem(Struct):
    flow_id: str
    name: str | None = None
    description: str | None = None
    deprecated: bool = False
    workflow_id: str | None = None
    deprecated_at: str | None = None
    deprecated_reason: str | None = None


class BundleItem(Struct):
    bundle_id: str
    bundle_version: str
    bundle_ref: str
    default_entrypoint: str | None
    entrypoints: list[EntrypointItem]
    created_at: str
    deprecated: bool = False


class BundleList(Struct):
    items: list[BundleItem]


class UploadForm(Struct):
    """multipart/form-data fields of an upload."""

    file: bytes
    overwrite: bool = False
    reload: bool = False


class InputPin(Struct):
    id: str
    label: str | None
    type: str | None
    default: Any = None
    required: bool = False
    schema: dict[str, Any] = {}  # the pin's JSON Schema (as the original)


class InputSchema(Struct):
    bundle_id: str
    bundle_version: str
    flow_id: str
    inputs: list[InputPin]
    # The original's fields: the workflow, a version of this document, defaults by pin, and the
    # input_data JSON Schema a client can build a form from.
    bundle_ref: str = ""
    workflow_id: str = ""
    version: int = 1
    defaults: dict[str, Any] = {}
    input_data_schema: dict[str, Any] = {}


class DeprecateRequest(Struct):
    flow_id: str | None = None
    reason: str | None = None


class UndeprecateRequest(Struct):
    flow_id: str | None = None


class DeprecationResponse(Struct):
    bundle_id: str
    flow_id: str | None
    deprecated: bool
    reason: str | None = None
    ok: bool = True  # the original's fields: ok, deprecated_at (deprecate), removed (undeprecate)
    deprecated_at: str | None = None
    removed: bool | None = None


class RemovedResponse(Struct):
    removed: int


# --- runs ---------------------------------------------------------------------------------------------
Tags = Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(max_length=32)]
TtlS = Annotated[float, Meta(gt=0, le=100 * 365.25 * 86400)]
WebhookUrl = Annotated[str, Meta(min_length=1, max_length=2048)]


# --- flow control (labels, concurrency keys, priorities, rate limits) ----------------------------------
Label = Annotated[
    str, Meta(min_length=1, max_length=129, pattern=r"^[A-Za-z0-9_.:/-]{1,64}(=[A-Za-z0-9_.:/-]{1,64})?$")
]
Overflow = Literal["enqueue", "reject", "cancel_oldest", "cancel_newest"]


class RateLimit(Struct, forbid_unknown_fields=True):
    """At most `limit` starts of the key begin per `window_s` seconds; later ones wait their turn."""

    limit: Annotated[int, Meta(ge=1, le=1_000_000)]
    window_s: Annotated[float, Meta(ge=0.01, le=31_622_400)]


class FlowControlFields(Struct, kw_only=True):
    """Fields a start or a schedule may carry; a bundle may declare the same (the request wins)."""

    priority: Annotated[int, Meta(ge=1, le=5)] | None = None
    # A literal or a template over the input: "user:{input.user_id}".
    concurrency_key: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    max_concurrent: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    overflow: Overflow | None = None
    count_waiting: bool | None = None  # a waiting run keeps its slot
    rate_limit: RateLimit | None = None
    requires: Annotated[list[Label], Meta(max_length=16)] | None = None


class StartRequest(FlowControlFields, kw_only=True):
    input_data: dict[str, Any] = {}
    bundle_id: str | None = None
    flow_id: str | None = None
    bundle_version: str | None = None
    session_id: str | None = None
    tags: Tags | None = None
    metadata: dict[str, Any] | None = None  # small (4 KiB as JSON, 32 keys); scalars are filterable
    ttl_s: TtlS | None = None  # deleted this long after it ended (retention)
    webhook_url: WebhookUrl | None = None  # told when the run ends or waits for a user


class ResolvedWorkflow(Struct):
    workflow_id: str
    bundle_id: str
    bundle_version: str
    flow_id: str
    name: str | None = None  # the entrypoint's name
    source: str = "client"  # as the original: the workflow the client named (never a server default)


class StartResponse(Struct):
    run_id: str
    resolved_workflow: ResolvedWorkflow
    # As the original: set when no runner is alive to start the run (it stays queued until one is).
    runner_warning: str | None = None


RunStatus = Literal["running", "waiting", "completed", "failed", "cancelled"]


class RunListQuery(Struct, forbid_unknown_fields=True):
    """Filters combine with AND; `status` and `tag` repeat (a run with any of the statuses, with
    every tag); `metadata.<key>=<value>` matches a metadata value. A `limit` above the page maximum
    is served up to it. Page on with `cursor=<next_cursor>` (stable while runs arrive) or `offset`."""

    QUERY_PREFIXES: ClassVar[tuple[str, ...]] = ("metadata.",)

    limit: Limit = 50  # served up to RUNS_PAGE_MAX
    offset: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 0
    status: list[str] = []
    workflow_id: str | None = None
    session_id: str | None = None
    parent_run_id: str | None = None
    cursor: Annotated[str, Meta(max_length=2048)] | None = None
    tag: list[str] = []
    created_after: str | None = None
    created_before: str | None = None
    ended_after: str | None = None
    ended_before: str | None = None
    q: str | None = None


class Waiting(Struct):
    reason: str
    wait_key: str | None
    until: str | None
    prompt: str | None
    choices: list[Any] | None
    allow_free_text: bool
    details: dict[str, Any] | None


class Blocked(Struct):
    reason: Literal["concurrency_limit", "rate_limit", "no_runner_with_labels"]
    detail: str
    until: str | None = None  # rate_limit: when the start becomes eligible


class RunView(Struct):
    run_id: str
    workflow_id: str
    status: RunStatus
    queued: bool
    current_node: str | None
    created_at: str
    updated_at: str
    session_id: str | None
    actor_id: str | None
    parent_run_id: str | None
    error: str | None
    paused: bool
    pause_reason: str | None
    paused_at: str | None
    resumed_at: str | None
    waiting: Waiting | None
    output: Any
    is_scheduled: bool
    schedule: dict[str, Any] | None
    ledger_len: int
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    rerun_of: str | None = None
    reruns: list[str] = []

    priority: int = 3
    concurrency_key: str | None = None
    requires: list[str] = []
    blocked: Blocked | None = None  # why the run is not running (held on its key, rate, labels)


class RunSummary(Struct):
    """A run in a list: the run view without its output (GET /runs/{id} has it)."""

    run_id: str
    workflow_id: str
    status: RunStatus
    queued: bool
    current_node: str | None
    created_at: str
    updated_at: str
    session_id: str | None
    parent_run_id: str | None
    error: str | None
    paused: bool
    pause_reason: str | None
    waiting: Waiting | None
    is_scheduled: bool
    schedule: dict[str, Any] | None
    ledger_len: int
    tags: list[str]
    metadata: dict[str, Any]
    rerun_of: str | None
    priority: int = 3
    concurrency_key: str | None = None
    requires: list[str] = []
    blocked: Blocked | None = None


class RunList(Struct):
    items: list[RunSummary]
    limit: int
    offset: int
    next_offset: int | None
    next_cursor: str | None = None
    count: int = 0  # as the original: the size of this page
    has_more: bool = False  # as the original: a next page exists


class InputDataResponse(Struct):
    run_id: str
    workflow_id: str
    bundle_id: str | None
    bundle_version: str | None
    flow_id: str | None
    input_data: dict[str, Any]
    pin_ids: list[str] = []  # the entry flow's input pins (as the original)


class ArtifactItem(Struct):
    artifact_id: str
    run_id: str | None
    content_type: str
    size_bytes: int
    created_at: str
    tags: dict[str, str]


class ArtifactQuery(Struct, forbid_unknown_fields=True):
    limit: Limit = ARTIFACTS_PAGE_MAX  # served up to ARTIFACTS_PAGE_MAX
    offset: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 0


class ArtifactList(Struct):
    items: list[ArtifactItem]
    limit: int
    offset: int
    next_offset: int | None
    has_more: bool = False  # as the original: a next page exists


# The original's history_bundle options (abstractruntime's export_run_history_bundle).
LEDGER_MODES = ("tail", "full")
DETAILS = ("full", "replay")


class HistoryQuery(Struct, forbid_unknown_fields=True):
    include_subruns: bool = True
    include_session: bool = False
    session_turn_limit: Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)] = 200
    ledger_mode: str = "tail"  # tail | full: what `ledgers` holds (ours, `ledger`, is always full)
    ledger_max_items: Annotated[int, Meta(ge=0, le=SQLITE_MAX_INT)] = 2000  # 0: full
    detail: str = "full"  # full | replay (the runtime's transcript projection of `ledgers`)


class HistoryBundle(Struct):
    """Everything to reconstruct a run offline: its view, input, ledger, descendants and artifacts;
    and the original's keys, abstractruntime's RunHistoryBundle v1 (`ledgers`, `timeline`, ...)."""

    format: str
    exported_at: str
    run: RunView
    input: InputDataResponse
    ledger: list[dict[str, Any]]
    children: list[dict[str, Any]]
    artifacts: list[ArtifactItem]
    version: int
    generated_at: str
    detail: str
    root_run_id: str
    workflow_snapshot: dict[str, Any] | None
    input_data: dict[str, Any]
    ledgers: dict[str, dict[str, Any]]
    timeline: list[dict[str, Any]]
    resolved_actions: list[dict[str, Any]]
    session: dict[str, Any] | None
    warnings: list[dict[str, Any]]


# --- commands -----------------------------------------------------------------------------------------
CommandType = Literal["pause", "resume", "cancel", "emit_event", "update_schedule", "compact_memory"]


class CommandRequest(Struct):
    command_id: Id
    run_id: Id
    type: str
    payload: dict[str, Any] = {}
    client_id: str | None = None


class CommandResponse(Struct):
    accepted: bool
    duplicate: bool
    seq: int


CommandState = Literal["pending", "applied", "rejected"]


class CommandStatus(Struct):
    command_id: str
    seq: int
    run_id: str
    type: str
    status: CommandState
    error: str | None
    applied_at: str | None


# --- ledger -------------------------------------------------------------------------------------------
class LedgerQuery(Struct, forbid_unknown_fields=True):
    after: Cursor = 0
    limit: Limit = 200


class StreamQuery(Struct, forbid_unknown_fields=True):
    after: Cursor = 0
    last_event_id: str | None = None
    heartbeat_s: Annotated[float, Meta(ge=0.05, le=300)] = 15.0


class StepRecord(Struct):
    """abstractruntime's StepRecord, as stored (documentation of the items; they are not re-encoded)."""

    run_id: str
    step_id: str
    node_id: str
    status: Literal["started", "completed", "waiting", "failed", "cancelled"]
    effect: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    actor_id: str | None = None
    session_id: str | None = None
    attempt: int = 1
    idempotency_key: str | None = None


class LedgerPage(Struct):
    items: list[StepRecord]
    next_after: int


class StepEvent(Struct):
    """`data` of an SSE `step` event (the event's `id` is the same cursor)."""

    cursor: int
    record: StepRecord


class DoneEvent(Struct):
    """`data` of the closing SSE `done` event: the run ended and every record was sent."""

    status: RunStatus  # the run's status (the original sends the constant "terminal")
    cursor: int
    run_id: str


class LedgerBatchRun(Struct):
    run_id: Id
    after: Cursor = 0


class LedgerBatchRequest(Struct):
    runs: Annotated[list[LedgerBatchRun], Meta(max_length=500)]
    limit: Limit = 200


class LedgerBatchEntry(Struct):
    items: list[StepRecord]
    next_after: int
    error: str | None = None


class LedgerBatchResponse(Struct):
    runs: dict[str, LedgerBatchEntry]
