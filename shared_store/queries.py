"""Every SQL statement the store runs, by name. The schema itself lives in migrations/.

Parameters are named (`:run_id`). Statements that write a run come in two forms: `..._FENCED`
checks the writer's lease (owner + epoch) in the same statement, `..._UNLEASED` only writes runs
that no runner holds (tools, tests, single-process use).
"""

from __future__ import annotations

# Next change-feed position. MAX over the runs_feed index is one b-tree seek.
_NEXT_FEED = "(SELECT COALESCE(MAX(feed_seq), 0) + 1 FROM runs)"

# A run with pending commands (or waiting, unpaused, on a child that already finished) is due now
# whatever its state says, so a save racing a command or a child's end never hides it from claims.
# emit_event commands are not the run's to apply (runners dispatch them): they make nothing due.
_DUE = (
    "CASE WHEN EXISTS (SELECT 1 FROM commands WHERE run_id = :run_id AND status = 'pending' "
    "AND type != 'emit_event') "
    "OR (:paused = 0 AND EXISTS (SELECT 1 FROM runs c WHERE c.run_id = :sub_run_id "
    "AND c.status IN ('completed', 'failed', 'cancelled'))) "
    "THEN MIN(COALESCE(:due_at, :now), :now) ELSE :due_at END"
)

_HELD = "runs.lease_owner = :owner AND runs.lease_epoch = :epoch"
_FREE = "runs.lease_owner IS NULL"

_RUN_COLUMNS = (
    "workflow_id",
    "status",
    "current_node",
    "wait_reason",
    "wait_key",
    "wait_until",
    "paused",
    "parent_run_id",
    "session_id",
    "actor_id",
    "created_at",
    "updated_at",
    "output_failed",
    "session_kind",
)
# created_at is the row's birth (a queued start keeps the time the client asked, not the start time).
_SET_COLUMNS = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS if c != "created_at")
# A started run's identity (abstractruntime refuses to change it): a save by its lease holder leaves
# those columns, and so their indexes (runs_workflow_created, runs_session_created, runs_parent), alone.
_IDENTITY = ("created_at", "workflow_id", "session_id", "parent_run_id", "actor_id")
_SET_STATE_COLUMNS = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS if c not in _IDENTITY)
# The claim order follows due_at in the same statement (a started run is never 'queued'), so the
# runs_claim_order_updated trigger finds nothing to do: one row write per save, not two. A row the
# upsert inserts gets it in its VALUES (no insert trigger: migration 0013).
_CLAIM_ORDER = "claim_order = excluded.due_at"


def _upsert_run(guard: str, *, only_queued: bool, identity: bool = True) -> str:
    columns = ", ".join(("run_id", *_RUN_COLUMNS))
    values = ", ".join(f":{c}" for c in ("run_id", *_RUN_COLUMNS))
    queued = "runs.status = 'queued' AND " if only_queued else ""
    assigned = _SET_COLUMNS if identity else _SET_STATE_COLUMNS
    return (
        f"INSERT INTO runs ({columns}, due_at, claim_order, lease_owner, lease_expires_at, lease_epoch, feed_seq) "
        f"VALUES ({values}, {_DUE}, {_DUE}, :born_owner, :born_expires_at, :born_epoch, {_NEXT_FEED}) "
        f"ON CONFLICT(run_id) DO UPDATE SET {assigned}, due_at = excluded.due_at, {_CLAIM_ORDER}, "
        f"feed_seq = excluded.feed_seq WHERE {queued}{guard}"
    )


# --- runs: abstractruntime RunStore ---------------------------------------------------------------
# A save is two statements in one transaction: the guarded upsert of the runs row (a run this
# writer creates is born leased to it: born_owner), then the document, written only if the
# first changed a row.
SAVE_RUN_FENCED = _upsert_run(_HELD, only_queued=False, identity=False)
SAVE_RUN_UNLEASED = _upsert_run(_FREE, only_queued=False)
# create_if_absent: insert, or fill a queued row that this writer holds.
CREATE_RUN_FENCED = _upsert_run(_HELD, only_queued=True)
CREATE_RUN_UNLEASED = _upsert_run(_FREE, only_queued=True)
SAVE_RUN_STATE = (
    "INSERT INTO run_states (run_id, run_json) VALUES (:run_id, :run_json) "
    "ON CONFLICT(run_id) DO UPDATE SET run_json = excluded.run_json"
)

LOAD_RUN = "SELECT run_json FROM run_states WHERE run_id = ?"
RUN_STATUS = "SELECT status FROM runs WHERE run_id = ?"
SESSION_KINDS = "SELECT DISTINCT session_kind FROM runs WHERE session_id = ? AND session_kind IS NOT NULL"
PROBE_CONTROL = "SELECT status, paused FROM runs WHERE run_id = ? AND status != 'queued'"
_STATES_FROM = (
    "SELECT s.run_json FROM runs r {hint}JOIN run_states s ON s.run_id = r.run_id WHERE r.status != 'queued'"
)
_STATES = _STATES_FROM.format(hint="")
# The planner would rather walk runs_status_updated over every waiting run; the partial index holds
# only event waiters, so a lookup costs O(matching waiters).
_EVENT_WAITERS = _STATES_FROM.format(hint="INDEXED BY runs_event_waiters ")
_DEADLINE_WAITERS = _STATES_FROM.format(hint="INDEXED BY runs_wait_until ")
LIST_CHILDREN = f"{_STATES} AND r.parent_run_id = ? ORDER BY r.created_at"
LIST_CHILDREN_BY_STATUS = f"{_STATES} AND r.parent_run_id = ? AND r.status = ? ORDER BY r.created_at"
LIST_DUE_WAIT_UNTIL = (
    f"{_DEADLINE_WAITERS} AND r.status = 'waiting' AND r.wait_until IS NOT NULL AND r.wait_until <= ? "
    "AND r.wait_reason IN ('until', 'event') ORDER BY r.wait_until LIMIT ?"
)
NEXT_WAIT_DEADLINE = (
    "SELECT MIN(wait_until) FROM runs WHERE status = 'waiting' AND wait_until IS NOT NULL "
    "AND wait_reason IN ('until', 'event')"
)
# emit_event: indexed by runs_event_waiters (partial on waiting/event rows).
LIST_EVENT_WAITERS = (
    f"{_EVENT_WAITERS} AND r.status = 'waiting' AND r.wait_reason = 'event' "
    "AND r.wait_key IN (SELECT value FROM json_each(?)) ORDER BY r.updated_at DESC LIMIT ?"
)
LIST_EVENT_WAITERS_BY_PREFIX = (
    f"{_EVENT_WAITERS} AND r.status = 'waiting' AND r.wait_reason = 'event' "
    "AND r.wait_key >= ? AND r.wait_key < ? ORDER BY r.updated_at DESC LIMIT ?"
)


def list_runs(filters: list[str]) -> str:
    """Runs matching `col = ?` filters (names from a fixed allowlist), newest update first."""
    where = "".join(f" AND r.{column} = ?" for column in filters)
    return f"{_STATES}{where} ORDER BY r.updated_at DESC LIMIT ?"


# --- ledger: abstractruntime LedgerStore ----------------------------------------------------------
# Append: the next dense seq is read from the run row that the guard checks, in one INSERT; the
# ledger_appended trigger advances runs.ledger_len and feed_seq in the same statement.
_APPEND_LEDGER = (
    "INSERT INTO ledger (run_id, seq, step_status, idempotency_key, record) "
    "SELECT run_id, ledger_len + 1, :step_status, :idempotency_key, :record FROM runs "
    "WHERE run_id = :run_id AND {guard}"
)
APPEND_LEDGER_FENCED = _APPEND_LEDGER.format(guard=_HELD)
APPEND_LEDGER_UNLEASED = _APPEND_LEDGER.format(guard=_FREE)
# Inside a runner's unit of work (shared_store/run_unit.py), whose transaction checked the fence first.
APPEND_LEDGER_IN_UNIT = _APPEND_LEDGER.format(guard="1")
LIST_LEDGER = "SELECT record FROM ledger WHERE run_id = ? ORDER BY seq"
# A page: one range read on the (run_id, seq) primary key.
LEDGER_PAGE = "SELECT seq, record FROM ledger WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
# The same page as one value: its records joined by commas (a JSON array's inside), its last seq and
# how many. Handing 1,000 rows to Python cost ~650-1,050 us a page (a row tuple and a bytes object per
# record, then a join); one joined value ~200-330 us (in-process, bench_store's ~300-byte records).
# The records join in the order the subquery yields them, its ORDER BY seq on the primary key (a
# co-routine feeding the aggregate row by row; tests/store/test_joined_page.py holds SQLite to it):
# group_concat's own ORDER BY sorted the page again in a temp b-tree, ~2 ms.
LEDGER_PAGE_JOINED = (
    "SELECT max(seq), CAST(group_concat(record, ',') AS BLOB), count(*) FROM "
    "(SELECT seq, record FROM ledger WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?)"
)
LEDGER_LEN = "SELECT ledger_len FROM runs WHERE run_id = ?"
# Without the hint the planner serves ORDER BY seq from the primary key and reads every record of
# the run: the per-step idempotency probe would grow with the ledger.
FIND_COMPLETED_RESULT = (
    "SELECT record FROM ledger INDEXED BY ledger_idempotency "
    "WHERE run_id = ? AND idempotency_key = ? AND step_status = 'completed' "
    "ORDER BY seq LIMIT 1"
)

# --- commands: abstractruntime CommandStore + outcomes ---------------------------------------------
INSERT_COMMAND = (
    "INSERT INTO commands (command_id, run_id, type, payload, ts, client_id, request_id) "
    "VALUES (:command_id, :run_id, :type, :payload, :ts, :client_id, :request_id) "
    "ON CONFLICT(command_id) DO NOTHING RETURNING seq"
)
COMMAND_SEQ = "SELECT seq FROM commands WHERE command_id = ?"
COMMAND_STATUS = "SELECT status FROM commands WHERE seq = ?"
# A new command makes its run due now (the lease holder's next save keeps it due while pending).
# A run already due (the usual case: queued, or many commands in a row) is left unwritten: rewriting
# due_at to its own value still rewrote the row and its runs_claim_order entry (measured on a queued
# run: the statement ~5-8 -> ~3 us, and the runs page no longer dirtied in the commit).
WAKE_RUN = (
    "UPDATE runs SET due_at = MIN(COALESCE(due_at, :now), :now) WHERE run_id = :run_id "
    "AND (due_at IS NULL OR due_at > :now)"
)
_COMMAND_COLUMNS = (
    "seq, command_id, run_id, type, payload, ts, client_id, status, error, applied_at, request_id"
)
COMMANDS_AFTER = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE seq > ? ORDER BY seq LIMIT ?"
COMMAND_BY_ID = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = ?"
PENDING_COMMANDS = (
    f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE run_id = ? AND status = 'pending' ORDER BY seq LIMIT ?"
)
LAST_COMMAND_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM commands"
RESOLVE_COMMAND_FENCED = (
    "UPDATE commands SET status = :status, error = :error, applied_at = :applied_at "
    "WHERE seq = :seq AND status = 'pending' AND EXISTS (SELECT 1 FROM runs WHERE runs.run_id = commands.run_id "
    f"AND {_HELD})"
)
RESOLVE_COMMAND_UNLEASED = (
    "UPDATE commands SET status = :status, error = :error, applied_at = :applied_at "
    "WHERE seq = :seq AND status = 'pending'"
)

# --- leases ---------------------------------------------------------------------------------------
# A runner claims only runs whose required labels (a JSON list) are all among its own (:labels).
# Runs requiring labels this runner lacks stay in the index and are stepped over by its claims.
LABELS_MET = (
    "(requires IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(requires) "
    "WHERE value NOT IN (SELECT value FROM json_each(:labels))))"
)
# A worker has been on the run across a heartbeat: this claim counts as stalled until a release or a
# ledger append (the trigger) clears the count. Once per claim (stall_epoch).
MARK_STALLED = (
    "UPDATE runs SET stalled_claims = stalled_claims + 1, stall_epoch = lease_epoch "
    "WHERE run_id = :run_id AND lease_owner = :owner AND lease_epoch = :epoch "
    "AND stall_epoch IS NOT lease_epoch"
)
# Claim flips rows out of the claimable set (lease_owner set) in the same statement and bumps the
# fencing epoch. The subquery walks the runs_claim_order partial index: higher priority first, then
# claim order (a queued keyed start's fair tag, otherwise its due time); held runs are not in it.
# By rowid, not run_id: the subquery is then answered from the index alone and the UPDATE finds each
# row without a second lookup through the run_id key (measured ~10% of the keyed claim rate).
# RETURNING comes in the UPDATE's row order, not the subquery's: the caller sorts the batch.
_CLAIM = (
    "UPDATE runs SET lease_owner = :owner, lease_expires_at = :expires_at, lease_epoch = lease_epoch + 1 "
    "WHERE rowid IN (SELECT rowid FROM runs INDEXED BY runs_claim_order WHERE lease_owner IS NULL "
    "AND due_at IS NOT NULL AND hold = 0 AND due_at <= :now AND {labels} "
    "ORDER BY priority DESC, claim_order LIMIT :n) "
    "RETURNING run_id, lease_epoch, priority, claim_order, stalled_claims"
)
CLAIM_RUNS = _CLAIM.format(labels=LABELS_MET)
# A runner without labels takes only runs that require none (no JSON work per statement: ~20% more
# claims/s measured).
CLAIM_RUNS_UNLABELLED = _CLAIM.format(labels="requires IS NULL")
# Giving a lease back also gives back the run's slot once it ended, or while it waits unless its key
# counts waiting runs (the flow_slot_freed trigger hands the slot on). Done at release, not at the
# save that ends the run: the closing ledger records come after that save.
_SLOT_AFTER_RELEASE = (
    "CASE WHEN slot = 1 AND (status IN ('completed', 'failed', 'cancelled') OR (status = 'waiting' "
    "AND NOT EXISTS (SELECT 1 FROM flow_keys WHERE key = runs.concurrency_key AND count_waiting = 1))) "
    "THEN 0 ELSE slot END"
)
# A run whose holder died after ending it (or after it started waiting) gives its slot back here.
RECLAIM_EXPIRED = (
    f"UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, slot = {_SLOT_AFTER_RELEASE} "
    "WHERE lease_owner IS NOT NULL AND lease_expires_at < :now"
)
RENEW_LEASE = (
    "UPDATE runs SET lease_expires_at = :expires_at WHERE run_id = :run_id AND lease_owner = :owner "
    "AND lease_epoch = :epoch"
)
RELEASE_LEASE = (
    "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, stalled_claims = 0, "
    f"slot = {_SLOT_AFTER_RELEASE} "
    "WHERE run_id = :run_id AND lease_owner = :owner AND lease_epoch = :epoch"
)
# Giving a run back also settles when it is next due, from its state (the caller's :due_at) and
# its inbox: a command that changed nothing leaves no stale "due now" behind to be claimed again.
RELEASE_SETTLED = (
    f"UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, stalled_claims = 0, due_at = {_DUE}, "
    # claim_order kept here too (the trigger would rewrite the row a second time): a queued run's
    # fair tag, else the due time just computed.
    f"claim_order = CASE WHEN status = 'queued' THEN COALESCE(fair_tag, {_DUE}) ELSE {_DUE} END, "
    f"slot = {_SLOT_AFTER_RELEASE} "
    "WHERE run_id = :run_id AND lease_owner = :owner AND lease_epoch = :epoch"
)
LEASE_OF = "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs WHERE run_id = ?"
# The claimable set is in claim order (runs_claim_order): counting its due runs reads the index alone,
# not-yet-due ones included (timers, schedule parents).
_DUE_COUNT = (
    "SELECT count(*) FROM runs INDEXED BY runs_claim_order WHERE lease_owner IS NULL AND due_at IS NOT NULL "
    "AND hold = 0 AND due_at <= {now}"
)
QUEUE_DEPTH = _DUE_COUNT.format(now="?")
# /metrics: six counts in one statement, each served by an index (runs_status_updated, runs_claim_order,
# runs_leased, commands_pending, the runners table is a handful of rows, runs_feed).
DEPLOYMENT_GAUGES = (
    "SELECT (SELECT count(*) FROM runs WHERE status = 'queued'), "
    f"({_DUE_COUNT.format(now=':now')}), "
    "(SELECT count(*) FROM runs INDEXED BY runs_leased WHERE lease_owner IS NOT NULL), "
    "(SELECT count(*) FROM commands WHERE status = 'pending'), "
    "(SELECT count(*) FROM runners WHERE stopped_at IS NULL AND heartbeat_at >= :since), "
    "(SELECT COALESCE(MAX(feed_seq), 0) FROM runs)"
)

# --- change feed ----------------------------------------------------------------------------------
FEED_HEAD = "SELECT COALESCE(MAX(feed_seq), 0) FROM runs"
FEED_SINCE = (
    "SELECT feed_seq, run_id, ledger_len, status FROM runs WHERE feed_seq > ? ORDER BY feed_seq LIMIT ?"
)

# --- artifacts ------------------------------------------------------------------------------------
_ARTIFACT_UPSERT = (
    "INSERT INTO artifacts (artifact_id, run_id, blob_id, content_type, size_bytes, created_at, metadata) "
    "SELECT :artifact_id, :run_id, :blob_id, :content_type, :size_bytes, :created_at, :metadata "
    "WHERE {guard} "
    "ON CONFLICT(artifact_id) DO UPDATE SET run_id = excluded.run_id, blob_id = excluded.blob_id, "
    "content_type = excluded.content_type, size_bytes = excluded.size_bytes, metadata = excluded.metadata"
)
STORE_ARTIFACT_FENCED = _ARTIFACT_UPSERT.format(
    guard="EXISTS (SELECT 1 FROM runs WHERE runs.run_id = :run_id AND " + _HELD + ")"
)
STORE_ARTIFACT = _ARTIFACT_UPSERT.format(guard="1")
ARTIFACT_METADATA = "SELECT metadata FROM artifacts WHERE artifact_id = ?"
ARTIFACT_BLOB = "SELECT blob_id, metadata FROM artifacts WHERE artifact_id = ?"
ARTIFACT_EXISTS = "SELECT 1 FROM artifacts WHERE artifact_id = ?"
DELETE_ARTIFACT = "DELETE FROM artifacts WHERE artifact_id = ? RETURNING blob_id"
BLOB_REFERENCED = "SELECT 1 FROM artifacts WHERE blob_id = ? LIMIT 1"
ARTIFACTS_OF_RUN = "SELECT metadata FROM artifacts WHERE run_id = ? ORDER BY created_at, artifact_id"
ARTIFACTS_PAGE_OF_RUN = (
    "SELECT metadata FROM artifacts WHERE run_id = ? ORDER BY created_at, artifact_id LIMIT ? OFFSET ?"
)
ARTIFACTS_ALL = "SELECT metadata FROM artifacts ORDER BY created_at DESC, artifact_id LIMIT ?"

# --- runners --------------------------------------------------------------------------------------
REGISTER_RUNNER = (
    "INSERT INTO runners (runner_id, host, pid, version, started_at, heartbeat_at, capabilities) "
    "VALUES (:runner_id, :host, :pid, :version, :started_at, :heartbeat_at, :capabilities) "
    "ON CONFLICT(runner_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, version = excluded.version, "
    "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, "
    "capabilities = excluded.capabilities"
)
RUNNER_HEARTBEAT = "UPDATE runners SET heartbeat_at = :heartbeat_at WHERE runner_id = :runner_id"
# The heartbeat also publishes the runner's metrics (Prometheus text) when it has them.
RUNNER_HEARTBEAT_METRICS = (
    "UPDATE runners SET heartbeat_at = :heartbeat_at, metrics = :metrics WHERE runner_id = :runner_id"
)
# Runners whose metrics the API exports: the live ones (a stopped runner's series end with it).
RUNNER_METRICS = (
    "SELECT runner_id, metrics FROM runners WHERE stopped_at IS NULL AND heartbeat_at >= ? "
    "AND metrics IS NOT NULL ORDER BY runner_id"
)
RUNNER_STOPPED = "UPDATE runners SET stopped_at = :stopped_at WHERE runner_id = :runner_id"
LIVE_RUNNERS = (
    "SELECT runner_id, host, pid, version, started_at, heartbeat_at, capabilities FROM runners "
    "WHERE stopped_at IS NULL AND heartbeat_at >= ? ORDER BY runner_id"
)

# --- runner work --------------------------------------------------------------------------------
# Is there anything for a runner to do? Three index probes (claimable, expired leases, events), no write.
# Due runs needing labels this runner lacks are stepped over: they are not work for it. The first
# probe walks runs_claim_order like the claim does (no separate due-time index to keep up on claims):
# it stops at the first due row, stepping over claimable runs not due yet that sort before it.
WORK_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM runs INDEXED BY runs_claim_order WHERE lease_owner IS NULL "
    f"AND due_at IS NOT NULL AND hold = 0 AND due_at <= :now AND {LABELS_MET}) "
    "OR EXISTS (SELECT 1 FROM runs INDEXED BY runs_leased WHERE lease_owner IS NOT NULL "
    "AND lease_expires_at < :now) "
    "OR EXISTS (SELECT 1 FROM commands INDEXED BY commands_pending_events "
    "WHERE status = 'pending' AND type = 'emit_event')"
)
# The unit of work's fence check: once per run per transaction, before the unit's statements.
FENCE_HELD = f"SELECT 1 FROM runs WHERE run_id = :run_id AND {_HELD}"
# What a claimed run is due for (run_unit.RunUnit.open): status, start request, state, whether it is
# scheduled, whether commands wait, then the columns flow_control.admit reads (as RUN_FLOW).
OPEN_RUN = (
    "SELECT r.status, s.start_json, s.run_json, EXISTS (SELECT 1 FROM schedules WHERE schedules.run_id = r.run_id), "
    "EXISTS (SELECT 1 FROM commands WHERE commands.run_id = r.run_id AND commands.status = 'pending' "
    "AND commands.type != 'emit_event'), "
    "r.status, r.concurrency_key, r.slot, r.begun_at, k.max_concurrent, k.rate_limit, k.rate_window_s, "
    "EXISTS (SELECT 1 FROM commands WHERE commands.run_id = r.run_id AND commands.status = 'pending' "
    "AND commands.type = 'cancel') FROM runs r LEFT JOIN run_states s ON s.run_id = r.run_id "
    "LEFT JOIN flow_keys k ON k.key = r.concurrency_key WHERE r.run_id = ?"
)
PENDING_RUN_COMMANDS = (
    f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE run_id = ? AND status = 'pending' "
    "AND type != 'emit_event' ORDER BY seq LIMIT ?"
)
CANCEL_PENDING = (
    "SELECT EXISTS (SELECT 1 FROM commands WHERE run_id = ? AND status = 'pending' AND type = 'cancel')"
)
PENDING_EVENTS = (
    f"SELECT {_COMMAND_COLUMNS} FROM commands INDEXED BY commands_pending_events "
    "WHERE status = 'pending' AND type = 'emit_event' ORDER BY seq LIMIT ?"
)
# Unpaused runs waiting on any of the keys (a JSON list), through the runs_event_waiters index.
EVENT_WAITER_IDS = (
    "SELECT run_id, wait_key FROM runs INDEXED BY runs_event_waiters WHERE status = 'waiting' "
    "AND wait_reason = 'event' AND wait_key IN (SELECT value FROM json_each(?)) AND paused = 0 "
    "ORDER BY run_id"
)
# A wait_event node may wait on a plain key ("demo:approval"): an event of that name reaches the
# runs of the event's scope waiting on it.
EVENT_WAITER_IDS_PLAIN = (
    "SELECT run_id, wait_key FROM runs INDEXED BY runs_event_waiters WHERE status = 'waiting' "
    "AND wait_reason = 'event' AND wait_key = :name AND paused = 0 AND (:scope = 'global' "
    "OR (:scope = 'session' AND COALESCE(session_id, run_id) = :scope_id) "
    "OR (:scope = 'run' AND run_id = :scope_id) OR (:scope = 'workflow' AND workflow_id = :scope_id)) "
    "ORDER BY run_id"
)
RUN_SCOPE = "SELECT session_id, workflow_id FROM runs WHERE run_id = ?"
ACTIVE_CHILDREN = (
    "SELECT run_id FROM runs WHERE parent_run_id = ? AND status NOT IN ('completed', 'failed', 'cancelled') "
    "ORDER BY created_at"
)

# --- bundles --------------------------------------------------------------------------------------
_BUNDLE_COLUMNS = "bundle_id, bundle_version, sha256, size_bytes, manifest, source, created_at"
INSERT_BUNDLE = (
    "INSERT INTO bundles (bundle_id, bundle_version, sha256, size_bytes, content, manifest, source, created_at) "
    "VALUES (:bundle_id, :bundle_version, :sha256, :size_bytes, :content, :manifest, :source, :created_at) "
    "ON CONFLICT(bundle_id, bundle_version) DO UPDATE SET sha256 = excluded.sha256, "
    "size_bytes = excluded.size_bytes, content = excluded.content, manifest = excluded.manifest, "
    "source = excluded.source, created_at = excluded.created_at, removed_at = NULL "
    "WHERE bundles.removed_at IS NOT NULL"
)
REPLACE_BUNDLE = (
    "INSERT INTO bundles (bundle_id, bundle_version, sha256, size_bytes, content, manifest, source, created_at) "
    "VALUES (:bundle_id, :bundle_version, :sha256, :size_bytes, :content, :manifest, :source, :created_at) "
    "ON CONFLICT(bundle_id, bundle_version) DO UPDATE SET sha256 = excluded.sha256, "
    "size_bytes = excluded.size_bytes, content = excluded.content, manifest = excluded.manifest, "
    "source = excluded.source, created_at = excluded.created_at, removed_at = NULL"
)
# Flows-dir imports: a version removed through the API stays removed across restarts.
INSERT_BUNDLE_IF_ABSENT = (
    "INSERT INTO bundles (bundle_id, bundle_version, sha256, size_bytes, content, manifest, source, created_at) "
    "VALUES (:bundle_id, :bundle_version, :sha256, :size_bytes, :content, :manifest, :source, :created_at) "
    "ON CONFLICT(bundle_id, bundle_version) DO NOTHING"
)
BUNDLE_SOURCE = (
    "SELECT source, sha256 FROM bundles WHERE bundle_id = ? AND bundle_version = ? AND removed_at IS NULL"
)
ALL_BUNDLES = f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE removed_at IS NULL ORDER BY bundle_id"
BUNDLE_VERSIONS = f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE bundle_id = ? AND removed_at IS NULL"
BUNDLE_CONTENT = (
    "SELECT content FROM bundles WHERE bundle_id = ? AND bundle_version = ? AND removed_at IS NULL"
)
# Runners compile removed versions too: runs started before the removal keep working.
COMPILE_SOURCE = "SELECT content, sha256 FROM bundles WHERE bundle_id = ? AND bundle_version = ?"
REMOVE_BUNDLE_VERSION = (
    "UPDATE bundles SET removed_at = ? WHERE bundle_id = ? AND bundle_version = ? AND removed_at IS NULL"
)
REMOVE_BUNDLE_ALL = "UPDATE bundles SET removed_at = ? WHERE bundle_id = ? AND removed_at IS NULL"
DEPRECATIONS = "SELECT bundle_id, flow_id, reason, created_at FROM bundle_deprecations"
DEPRECATIONS_OF = "SELECT flow_id, reason FROM bundle_deprecations WHERE bundle_id = ?"
DEPRECATE = (
    "INSERT INTO bundle_deprecations (bundle_id, flow_id, reason, created_at) "
    "VALUES (:bundle_id, :flow_id, :reason, :created_at) "
    "ON CONFLICT(bundle_id, flow_id) DO UPDATE SET reason = excluded.reason, created_at = excluded.created_at"
)
UNDEPRECATE = "DELETE FROM bundle_deprecations WHERE bundle_id = ? AND flow_id = ?"
BUNDLE_CHECKS = "SELECT bundle_id, bundle_version, sha256, compile_error FROM bundle_checks"
COMPILE_FAILURES = (
    "SELECT c.bundle_id, c.bundle_version, c.compile_error FROM bundle_checks c JOIN bundles b "
    "ON b.bundle_id = c.bundle_id AND b.bundle_version = c.bundle_version AND b.sha256 = c.sha256 "
    "WHERE c.compile_error IS NOT NULL AND b.removed_at IS NULL ORDER BY c.bundle_id, c.bundle_version"
)
RECORD_BUNDLE_CHECK = (
    "INSERT INTO bundle_checks (bundle_id, bundle_version, sha256, compile_error, checked_at) "
    "VALUES (:bundle_id, :bundle_version, :sha256, :compile_error, :checked_at) "
    "ON CONFLICT(bundle_id, bundle_version, sha256) DO UPDATE SET compile_error = excluded.compile_error, "
    "checked_at = excluded.checked_at"
)

# --- queued starts (API) --------------------------------------------------------------------------
START_KEY = "SELECT run_id, request_sha256 FROM run_start_keys WHERE idempotency_key = ?"
# The key's first request wins; a duplicate gets no row back and reads the winner with START_KEY in
# a NEW statement. (A read-then-insert let two concurrent duplicates both through under PostgreSQL's
# READ COMMITTED; ON CONFLICT waits for a concurrent insert of the key to commit or roll back.)
INSERT_START_KEY = (
    "INSERT INTO run_start_keys (idempotency_key, run_id, request_sha256, created_at) "
    "VALUES (:idempotency_key, :run_id, :request_sha256, :created_at) "
    "ON CONFLICT(idempotency_key) DO NOTHING RETURNING run_id"
)
# Every INSERT INTO runs writes claim_order itself (no trigger does, migration 0013): a queued row
# without a fair tag is in claim order by its due time, any other row too.
ENQUEUE_RUN = (
    "INSERT INTO runs (run_id, workflow_id, status, session_id, parent_run_id, created_at, updated_at, "
    f"due_at, claim_order, feed_seq) VALUES (:run_id, :workflow_id, 'queued', :session_id, :parent_run_id, "
    f":created_at, :created_at, :now, :now, {_NEXT_FEED})"
)
ENQUEUE_RUN_STATE = "INSERT INTO run_states (run_id, start_json) VALUES (:run_id, :start_json)"
START_REQUEST = "SELECT start_json FROM run_states WHERE run_id = ?"

# --- API reads (run views) ---
# The client's view of runs (shared_store/run_views.py): the hot row plus the RunState document.
_RUN_VIEW = (
    "SELECT r.run_id, r.workflow_id, r.status, r.current_node, r.created_at, r.updated_at, r.session_id, "
    "r.parent_run_id, r.paused, r.output_failed, r.ledger_len, s.run_json "
    "FROM runs r LEFT JOIN run_states s ON s.run_id = r.run_id"
)
RUN_VIEW = f"{_RUN_VIEW} WHERE r.run_id = ?"
# The runs list (filters, pages) is shared_store/run_list.py.


RUN_INPUT = (
    "SELECT r.workflow_id, s.start_json, s.run_json FROM runs r "
    "LEFT JOIN run_states s ON s.run_id = r.run_id WHERE r.run_id = ?"
)
RUN_DESCENDANTS = (
    "WITH RECURSIVE d(run_id, depth) AS (SELECT run_id, 1 FROM runs WHERE parent_run_id = :run_id "
    "UNION ALL SELECT r.run_id, d.depth + 1 FROM runs r JOIN d ON r.parent_run_id = d.run_id "
    "WHERE d.depth < 32) SELECT run_id FROM d LIMIT :limit"
)
RUN_PROGRESS = "SELECT status, ledger_len, output_failed, updated_at FROM runs WHERE run_id = ?"
LEDGER_KEY_AT = "SELECT idempotency_key FROM ledger WHERE run_id = ? AND seq = ?"
ARTIFACT_OF = "SELECT run_id, blob_id, content_type, size_bytes FROM artifacts WHERE artifact_id = ?"

# --- schedules ------------------------------------------------------------------------------------
INSERT_SCHEDULE = (
    "INSERT INTO schedules (run_id, workflow_id, bundle_id, bundle_version, flow_id, input_data, session_id, "
    "share_context, start_at, interval_s, interval, cron, timezone, repeat_count, repeat_until, catch_up, "
    "overlap, next_fire_at, created_at, updated_at) VALUES (:run_id, :workflow_id, :bundle_id, "
    ":bundle_version, :flow_id, :input_data, :session_id, :share_context, :start_at, :interval_s, :interval, "
    ":cron, :timezone, :repeat_count, :repeat_until, :catch_up, :overlap, :next_fire_at, :created_at, "
    ":created_at)"
)
SCHEDULE_OF = (
    "SELECT run_id, workflow_id, input_data, session_id, share_context, start_at, interval_s, cron, timezone, "
    "repeat_count, repeat_until, catch_up, overlap, next_fire_at, fired_count, skipped_count, last_fired_at, "
    "last_child_run_id, status, interval, bundle_id, bundle_version, flow_id, created_at, updated_at "
    "FROM schedules WHERE run_id = ?"
)
# Fenced by the parent's lease: only the runner holding the scheduled parent advances its schedule.
_HELD_PARENT = "EXISTS (SELECT 1 FROM runs WHERE runs.run_id = :run_id AND " + _HELD + ")"
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET next_fire_at = :next_fire_at, fired_count = fired_count + :fired, "
    "skipped_count = skipped_count + :skipped, last_fired_at = COALESCE(:last_fired_at, last_fired_at), "
    "last_child_run_id = COALESCE(:last_child_run_id, last_child_run_id), status = :status, "
    f"updated_at = :updated_at WHERE run_id = :run_id AND {_HELD_PARENT}"
)
UPDATE_SCHEDULE_SPEC = (
    "UPDATE schedules SET interval_s = :interval_s, interval = :interval, cron = :cron, timezone = :timezone, "
    "repeat_count = :repeat_count, repeat_until = :repeat_until, catch_up = :catch_up, overlap = :overlap, "
    "start_at = :start_at, next_fire_at = :next_fire_at, status = :status, updated_at = :updated_at "
    f"WHERE run_id = :run_id AND {_HELD_PARENT}"
)
SET_SCHEDULE_STATUS = f"UPDATE schedules SET status = :status, updated_at = :updated_at WHERE run_id = :run_id AND {_HELD_PARENT}"
ENQUEUE_CHILD_RUN = (
    "INSERT INTO runs (run_id, workflow_id, status, session_id, parent_run_id, created_at, updated_at, "
    f"due_at, claim_order, feed_seq) SELECT :child_run_id, :workflow_id, 'queued', :session_id, :run_id, "
    f":created_at, :created_at, :now, :now, {_NEXT_FEED} WHERE {_HELD_PARENT}"
)
ENQUEUE_CHILD_STATE = "INSERT INTO run_states (run_id, start_json) VALUES (:child_run_id, :start_json)"

# --- file-store import ---
# Importing a data dir of the file backend (shared_store/file_import.py). Rows keep the ids, times
# and states the file gateway wrote; every insert is a no-op on a row already there, so a re-run
# adds nothing. An imported run is born unleased, due from its state (and pending commands).
_IMPORT_RUN_COLUMNS = ("run_id", *_RUN_COLUMNS)
IMPORT_RUN = (
    f"INSERT INTO runs ({', '.join(_IMPORT_RUN_COLUMNS)}, due_at, claim_order, feed_seq) "
    f"VALUES ({', '.join(':' + c for c in _IMPORT_RUN_COLUMNS)}, {_DUE}, {_DUE}, {_NEXT_FEED}) "
    "ON CONFLICT(run_id) DO NOTHING"
)
IMPORT_RUN_PROBE = "SELECT ledger_len, lease_owner, updated_at FROM runs WHERE run_id = ?"
LEDGER_RECORD_AT = "SELECT record FROM ledger WHERE run_id = ? AND seq = ?"
IMPORT_COMMAND = (
    "INSERT INTO commands (command_id, run_id, type, payload, ts, client_id, status, applied_at) "
    "VALUES (:command_id, :run_id, :type, :payload, :ts, :client_id, :status, :applied_at) "
    "ON CONFLICT(command_id) DO NOTHING"
)
IMPORT_ARTIFACT = (
    "INSERT INTO artifacts (artifact_id, run_id, blob_id, content_type, size_bytes, created_at, metadata) "
    "VALUES (:artifact_id, :run_id, :blob_id, :content_type, :size_bytes, :created_at, :metadata) "
    "ON CONFLICT(artifact_id) DO NOTHING"
)
# Verification: what the db holds of the ids read from the files (a JSON list of ids). Ledger rows
# are counted, not read from runs.ledger_len: the check is on the data, not on a counter.
IMPORTED_LEDGER_COUNTS = (
    "SELECT r.run_id, (SELECT count(*) FROM ledger l WHERE l.run_id = r.run_id) FROM runs r "
    "WHERE r.run_id IN (SELECT value FROM json_each(?))"
)
IMPORTED_COMMANDS = "SELECT count(*) FROM commands WHERE command_id IN (SELECT value FROM json_each(?))"
IMPORTED_ARTIFACTS = (
    "SELECT artifact_id, blob_id, size_bytes FROM artifacts "
    "WHERE artifact_id IN (SELECT value FROM json_each(?))"
)
# A parent imported before the child it waits on ended: due now (the child_finished trigger fires on
# updates only, never on the import's insert of a finished child).
WAKE_IMPORTED_PARENT = (
    "UPDATE runs SET due_at = MIN(COALESCE(due_at, :now), :now) WHERE run_id = :run_id "
    "AND status = 'waiting' AND paused = 0 AND EXISTS (SELECT 1 FROM runs c WHERE c.run_id = :child_id "
    "AND c.status IN ('completed', 'failed', 'cancelled'))"
)

# --- media jobs -----------------------------------------------------------------------------------
ARTIFACT_REF = "SELECT artifact_id, run_id, content_type, size_bytes FROM artifacts WHERE artifact_id = ?"
JOB_STATE = (
    "SELECT r.status, s.run_json FROM runs r JOIN run_states s ON s.run_id = r.run_id WHERE r.run_id = ?"
)
# A job's outputs are artifacts of its parent run, written by the holder of the job's lease.
STORE_ARTIFACT_FOR_JOB = _ARTIFACT_UPSERT.format(
    guard="EXISTS (SELECT 1 FROM runs WHERE runs.run_id = :job_run_id AND " + _HELD + ")"
)

# --- capability defaults (config set-default / clear-default; runners and the API read) -------------
_DEFAULT_COLUMNS = "route, provider, model, base_url, options, updated_at"
SET_CAPABILITY_DEFAULT = (
    f"INSERT INTO capability_defaults ({_DEFAULT_COLUMNS}) "
    "VALUES (:route, :provider, :model, :base_url, :options, :updated_at) "
    "ON CONFLICT(route) DO UPDATE SET provider = excluded.provider, model = excluded.model, "
    "base_url = excluded.base_url, options = excluded.options, updated_at = excluded.updated_at"
)
CLEAR_CAPABILITY_DEFAULT = "DELETE FROM capability_defaults WHERE route = ?"
CAPABILITY_DEFAULT = f"SELECT {_DEFAULT_COLUMNS} FROM capability_defaults WHERE route = ?"
CAPABILITY_DEFAULTS = f"SELECT {_DEFAULT_COLUMNS} FROM capability_defaults ORDER BY route"

# --- flow control: labels, concurrency keys, priorities, rate limits (shared_store/flow_control.py) ---
# A key's limits: what a start or schedule gives overrides, what it leaves out stays.
UPSERT_FLOW_KEY = (
    "INSERT INTO flow_keys (key, max_concurrent, count_waiting, rate_limit, rate_window_s, updated_at) "
    "VALUES (:key, :max_concurrent, COALESCE(:count_waiting, 0), :rate_limit, :rate_window_s, :updated_at) "
    "ON CONFLICT(key) DO UPDATE SET max_concurrent = COALESCE(excluded.max_concurrent, flow_keys.max_concurrent), "
    "count_waiting = COALESCE(:count_waiting, flow_keys.count_waiting), "
    "rate_limit = COALESCE(excluded.rate_limit, flow_keys.rate_limit), "
    "rate_window_s = COALESCE(excluded.rate_window_s, flow_keys.rate_window_s), updated_at = excluded.updated_at"
)
FLOW_KEY = (
    "SELECT max_concurrent, count_waiting, rate_limit, rate_window_s, last_tag FROM flow_keys WHERE key = ?"
)
SET_KEY_TAG = "UPDATE flow_keys SET last_tag = :tag WHERE key = :key"
SET_RUN_FLOW = (
    "UPDATE runs SET priority = :priority, concurrency_key = :concurrency_key, requires = :requires, "
    "fair_tag = :fair_tag, hold = :hold WHERE run_id = :run_id"
)
# Taken before a key's slots are counted and handed out (a start, a schedule's child, a runner's
# admission). SQLite's write lock already serialises those: a no-op there. PostgreSQL's twin takes the
# key's transaction-scoped advisory lock that the flow_hand_out_slots trigger takes: without it, two
# transactions count the same free slot under READ COMMITTED and both take it.
LOCK_FLOW_KEY = "SELECT :key IS NOT NULL"
KEY_SLOTS = "SELECT count(*) FROM runs INDEXED BY runs_key_slots WHERE concurrency_key = ? AND slot = 1"
# cancel_oldest: the oldest run holding a slot of the key and not already being cancelled.
KEY_OLDEST_SLOT = (
    "SELECT run_id FROM runs INDEXED BY runs_key_slots WHERE concurrency_key = ? AND slot = 1 "
    "AND NOT EXISTS (SELECT 1 FROM commands WHERE commands.run_id = runs.run_id "
    "AND commands.status = 'pending' AND commands.type = 'cancel') ORDER BY created_at LIMIT 1"
)
# What the runner needs to admit a claimed run: its key's limits and whether a cancel is pending.
RUN_FLOW = (
    "SELECT r.status, r.concurrency_key, r.slot, r.begun_at, k.max_concurrent, k.rate_limit, k.rate_window_s, "
    "EXISTS (SELECT 1 FROM commands WHERE commands.run_id = r.run_id AND commands.status = 'pending' "
    "AND commands.type = 'cancel') FROM runs r LEFT JOIN flow_keys k ON k.key = r.concurrency_key "
    "WHERE r.run_id = ?"
)
KEY_BEGUN_SINCE = (
    "SELECT begun_at FROM runs INDEXED BY runs_key_begun WHERE concurrency_key = ? AND begun_at > ? "
    "ORDER BY begun_at"
)
ADMIT_RUN_FENCED = (
    "UPDATE runs SET slot = MAX(slot, :slot), begun_at = COALESCE(begun_at, :begun_at) "
    f"WHERE run_id = :run_id AND {_HELD}"
)
HOLD_RUN_FENCED = f"UPDATE runs SET hold = 1 WHERE run_id = :run_id AND slot = 0 AND {_HELD}"
# A start beyond its key's rate waits until it is eligible, ordered by that time (not its fair tag).
DEFER_START_FENCED = f"UPDATE runs SET due_at = :due_at, fair_tag = NULL WHERE run_id = :run_id AND {_HELD}"
# Health: live (not finished) runs per required label set.
REQUIRED_LABEL_SETS = (
    "SELECT requires, count(*) FROM runs INDEXED BY runs_requires WHERE requires IS NOT NULL "
    "AND status IN ('queued', 'running', 'waiting') GROUP BY requires"
)
RUN_FLOW_VIEW = (
    "SELECT r.priority, r.concurrency_key, r.requires, r.hold, r.due_at, r.status, r.lease_owner, "
    "k.max_concurrent, k.rate_limit, k.rate_window_s FROM runs r "
    "LEFT JOIN flow_keys k ON k.key = r.concurrency_key WHERE r.run_id = ?"
)
# Hand free slots of a key to its held runs (what the flow_slot_freed trigger does): a start of a
# limited key is born held and admitted here when a slot is free.
ADMIT_HELD = (
    "UPDATE runs SET hold = 0, slot = 1, due_at = MIN(COALESCE(due_at, :now), :now) WHERE run_id IN ("
    "SELECT run_id FROM runs INDEXED BY runs_key_held WHERE concurrency_key = :key AND hold = 1 "
    "ORDER BY priority DESC, created_at LIMIT MAX(0, COALESCE((SELECT max_concurrent FROM flow_keys "
    "WHERE key = :key), 1 << 30) - (SELECT count(*) FROM runs INDEXED BY runs_key_slots "
    "WHERE concurrency_key = :key AND slot = 1)))"
)
# A scheduled firing's child takes the schedule's flow control, in the parent's save transaction.
SCHEDULE_FLOW = "SELECT flow FROM schedules WHERE run_id = ?"
SET_SCHEDULE_FLOW = "UPDATE schedules SET flow = :flow WHERE run_id = :run_id"
SET_CHILD_FLOW = (
    "UPDATE runs SET priority = :priority, concurrency_key = :key, requires = :requires, "
    "fair_tag = CASE WHEN :key IS NULL THEN NULL ELSE MAX(:now, COALESCE((SELECT last_tag + :step "
    "FROM flow_keys WHERE key = :key), :now)) END, "
    # CASE, not the bare EXISTS: the flag is an integer column (PostgreSQL refuses a boolean there).
    "hold = CASE WHEN EXISTS (SELECT 1 FROM flow_keys WHERE key = :key AND max_concurrent IS NOT NULL) "
    "THEN 1 ELSE 0 END WHERE run_id = :child_run_id"
)
SET_KEY_TAG_OF_RUN = "UPDATE flow_keys SET last_tag = (SELECT fair_tag FROM runs WHERE run_id = :child_run_id) WHERE key = :key"

# --- minted API tokens (revocation list) -----------------------------------------------------------
INSERT_API_TOKEN = (
    "INSERT INTO api_tokens (token_id, scopes, run_id, session_id, label, issued_by, issued_at, expires_at) "
    "VALUES (:token_id, :scopes, :run_id, :session_id, :label, :issued_by, :issued_at, :expires_at)"
)
API_TOKEN_ACTIVE = "SELECT 1 FROM api_tokens WHERE token_id = ? AND revoked_at IS NULL AND expires_at > ?"
REVOKE_API_TOKEN = "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL"
API_TOKEN_EXISTS = "SELECT revoked_at FROM api_tokens WHERE token_id = ?"
LIST_API_TOKENS = (
    "SELECT token_id, scopes, run_id, session_id, label, issued_at, expires_at, revoked_at "
    "FROM api_tokens WHERE expires_at > ? ORDER BY issued_at DESC LIMIT ?"
)
# Rows of tokens long expired carry no information a request could need.
PRUNE_API_TOKENS = "DELETE FROM api_tokens WHERE expires_at < ?"
RUN_SESSION = "SELECT session_id FROM runs WHERE run_id = ?"
BUNDLE_SHA = (
    "SELECT bundle_version, sha256 FROM bundles WHERE bundle_id = ? AND removed_at IS NULL "
    "AND (? IS NULL OR bundle_version = ?)"
)
# The sha256 an upload replaces (a removed version included: re-uploading it changes what its runs compile).
BUNDLE_SHA_ANY = "SELECT sha256 FROM bundles WHERE bundle_id = ? AND bundle_version = ?"
