-- 0001_initial: runs with leases, the ledger, the command inbox, artifacts, runners, the change feed.
-- Times that code compares are REAL unix seconds (due_at, lease_expires_at, heartbeat_at);
-- times shown to clients are ISO 8601 UTC text, as abstractruntime writes them.

CREATE TABLE schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

-- One row per run: small and hot (leases, counters, index columns). The columns mirror fields of
-- the run's RunState, written in the same transaction as the state itself (run_states).
CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY,
    workflow_id       TEXT NOT NULL,
    status            TEXT NOT NULL,       -- queued | running | waiting | completed | failed | cancelled
    current_node      TEXT,
    wait_reason       TEXT,
    wait_key          TEXT,
    wait_until        TEXT,
    paused            INTEGER NOT NULL DEFAULT 0,
    parent_run_id     TEXT,
    session_id        TEXT,
    actor_id          TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    -- When a runner should next look at this run (NULL: nothing to do until something happens).
    due_at            REAL,
    -- Row-level lease: the one writer of this run's state. lease_epoch only ever grows (fencing token).
    lease_owner       TEXT,
    lease_expires_at  REAL,
    lease_epoch       INTEGER NOT NULL DEFAULT 0,
    -- Dense per-run ledger length: the last ledger seq of this run.
    ledger_len        INTEGER NOT NULL DEFAULT 0,
    -- Change feed position: bumped on every ledger append and state save (global order).
    feed_seq          INTEGER NOT NULL DEFAULT 0
);

-- The run documents, apart from the hot row: a lease renewal or a ledger append must not rewrite
-- a state of many kilobytes. run_json is abstractruntime's RunState (msgspec JSON), NULL while the
-- run is queued (written by the API, not yet started by a runner); start_json is that request.
CREATE TABLE run_states (
    run_id      TEXT PRIMARY KEY,
    run_json    BLOB,
    start_json  BLOB
);

-- The claimable set. A claim sets lease_owner, which takes the row out of this index in the
-- same statement, so leased rows never slow the next claim.
CREATE INDEX runs_claimable ON runs(due_at) WHERE lease_owner IS NULL AND due_at IS NOT NULL;
-- Leases to reclaim when they expire.
CREATE INDEX runs_leased ON runs(lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_feed ON runs(feed_seq);
CREATE INDEX runs_status_updated ON runs(status, updated_at);
CREATE INDEX runs_workflow_created ON runs(workflow_id, created_at);
CREATE INDEX runs_session_created ON runs(session_id, created_at);
CREATE INDEX runs_created ON runs(created_at);
CREATE INDEX runs_parent ON runs(parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_wait_until ON runs(wait_until) WHERE status = 'waiting' AND wait_until IS NOT NULL;
-- emit_event finds the runs waiting on a key through this index, not by scanning waiting runs.
CREATE INDEX runs_event_waiters ON runs(wait_key) WHERE status = 'waiting' AND wait_reason = 'event';

-- Append-only ledger: per-run dense seq from 1. WITHOUT ROWID keeps one run's records
-- physically together, so a page is one contiguous range read.
CREATE TABLE ledger (
    run_id           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    step_status      TEXT,
    idempotency_key  TEXT,
    record           BLOB NOT NULL,        -- abstractruntime StepRecord (msgspec JSON)
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE INDEX ledger_idempotency ON ledger(run_id, idempotency_key, seq) WHERE idempotency_key IS NOT NULL;

-- Whoever appends a record, the run's ledger_len and change-feed position follow in the same
-- statement (an append is then one INSERT: no separate transaction round trips).
CREATE TRIGGER ledger_appended AFTER INSERT ON ledger
BEGIN
    UPDATE runs SET ledger_len = NEW.seq, feed_seq = (SELECT COALESCE(MAX(feed_seq), 0) + 1 FROM runs)
    WHERE run_id = NEW.run_id;
END;

-- Durable command inbox: idempotent by command_id, one global seq; each command gets an outcome.
CREATE TABLE commands (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id   TEXT NOT NULL UNIQUE,
    run_id       TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      BLOB NOT NULL,
    ts           TEXT NOT NULL,
    client_id    TEXT,
    status       TEXT NOT NULL DEFAULT 'pending',   -- pending | applied | rejected
    error        TEXT,
    applied_at   TEXT
);

CREATE INDEX commands_pending ON commands(run_id, seq) WHERE status = 'pending';

-- Artifact metadata; the bytes live on disk beside the db, content-addressed by blob_id (sha256).
CREATE TABLE artifacts (
    artifact_id   TEXT PRIMARY KEY,
    run_id        TEXT,
    blob_id       TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    metadata      BLOB NOT NULL              -- abstractruntime ArtifactMetadata.to_dict() (msgspec JSON)
);

CREATE INDEX artifacts_run ON artifacts(run_id, created_at);
CREATE INDEX artifacts_blob ON artifacts(blob_id);
CREATE INDEX artifacts_created ON artifacts(created_at);

-- Live runner processes: heartbeats, version, published capabilities.
CREATE TABLE runners (
    runner_id     TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  REAL NOT NULL,
    stopped_at    TEXT,
    capabilities  BLOB NOT NULL DEFAULT '{}'
);
