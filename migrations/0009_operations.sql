-- operations: tags and metadata on runs (indexed for the runs list and bulk filters), reruns,
-- bulk commands, webhook subscriptions and deliveries, retention.

-- What a run is about, as the client said at start (inherited by a schedule's children). The JSON
-- copies are what views show; run_tags / run_metadata are what filters walk.
ALTER TABLE runs ADD COLUMN tags BLOB;        -- JSON list of strings
ALTER TABLE runs ADD COLUMN metadata BLOB;    -- JSON object
ALTER TABLE runs ADD COLUMN rerun_of TEXT;    -- the run this one reruns
ALTER TABLE runs ADD COLUMN ttl_s REAL;       -- per-run retention (seconds after it ended)
ALTER TABLE runs ADD COLUMN webhook_url TEXT; -- per-start webhook target
ALTER TABLE runs ADD COLUMN expires_at REAL;  -- unix seconds: ended + ttl_s (set when it ends)

CREATE INDEX runs_rerun_of ON runs(rerun_of) WHERE rerun_of IS NOT NULL;
-- Runs list pages (newest first, ties by run_id) walk these in order: a page of LIMIT rows reads
-- about LIMIT index entries instead of sorting every match.
CREATE INDEX runs_created_page ON runs(created_at DESC, run_id);
CREATE INDEX runs_status_page ON runs(status, created_at DESC, run_id);
-- COMPLETED runs whose output says success: false (clients see "failed"): few, found without a scan.
CREATE INDEX runs_output_failed_page ON runs(created_at DESC, run_id) WHERE output_failed = 1;

-- One row per (tag, run) in page order: a tag filter is a range of this key, already sorted.
CREATE TABLE run_tags (
    tag         TEXT NOT NULL,
    created_at  TEXT NOT NULL,   -- the run's created_at (page order)
    run_id      TEXT NOT NULL,
    PRIMARY KEY (tag, created_at DESC, run_id)
) WITHOUT ROWID;
CREATE INDEX run_tags_run ON run_tags(run_id);

-- metadata.<key>=<value> filters: scalar values as text (strings as is, others as JSON).
CREATE TABLE run_metadata (
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    PRIMARY KEY (key, value, created_at DESC, run_id)
) WITHOUT ROWID;
CREATE INDEX run_metadata_run ON run_metadata(run_id);

-- Bulk commands: the API stores the operation; runners expand it into ordinary commands
-- (command_id 'bulk:<bulk_id>:<run_id>') in bounded batches, walking the matched runs by keyset
-- from the newest created at or before the operation (runs started later are not matched).
CREATE TABLE bulk_ops (
    bulk_id          TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    filter           BLOB NOT NULL,      -- JSON (shared_store.run_filter.RunFilter)
    payload          BLOB NOT NULL,
    request_sha256   TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'expanding',   -- expanding | expanded
    matched          INTEGER NOT NULL DEFAULT 0,
    cursor_created   TEXT,               -- keyset position of the expansion
    cursor_run_id    TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX bulk_ops_expanding ON bulk_ops(created_at) WHERE status = 'expanding';

-- Retention. A run with a ttl expires ttl_s after it ends: set in the statement that ends it.
CREATE TRIGGER run_expiry AFTER UPDATE OF status ON runs
WHEN NEW.ttl_s IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE runs SET expires_at = (julianday('now') - 2440587.5) * 86400.0 + NEW.ttl_s
    WHERE run_id = NEW.run_id;
END;
CREATE INDEX runs_expiry ON runs(expires_at) WHERE expires_at IS NOT NULL;
-- What deleting a run touches, by run: without these each delete would scan the table.
-- (Finished commands only: a full commands(run_id) index would win the planner over commands_pending
-- for the runner's hot pending-commands read; pending ones are found through commands_pending.)
CREATE INDEX commands_done_run ON commands(run_id) WHERE status != 'pending';
CREATE INDEX run_start_keys_run ON run_start_keys(run_id);

-- Webhooks. A subscription names events (run.completed | run.failed | run.cancelled | run.waiting),
-- optionally a workflow_id prefix and a tag; secrets is a JSON list of {"secret", "expires_at"}
-- (rotation keeps the previous secret signing beside the new one for a while).
CREATE TABLE webhooks (
    webhook_id   TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    events       BLOB NOT NULL,      -- JSON list
    workflow_id  TEXT,               -- prefix of the runs' workflow_id
    tag          TEXT,
    secrets      BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    deleted_at   TEXT
);
-- The signing secret of per-start webhook_url deliveries (one per gateway, made on first use).
CREATE TABLE webhook_keys (
    name        TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
-- One row per message: written by the trigger below in the same statement that ends the run (or
-- makes it wait for a user), so a delivery exists exactly when the event happened. Runners send it;
-- the body is built at the first attempt from the run and kept, so every retry signs the same bytes.
CREATE TABLE webhook_deliveries (
    delivery_id       TEXT PRIMARY KEY,    -- msg_<hex>: the webhook-id header, the same on retries
    webhook_id        TEXT,                -- NULL: the run's own webhook_url
    run_id            TEXT NOT NULL,
    event             TEXT NOT NULL,
    url               TEXT NOT NULL,
    body              BLOB,
    status            TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | failed | refused | cancelled
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL NOT NULL,
    retry_until       REAL NOT NULL,
    claimed_until     REAL,                -- a runner is sending it until then
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id);

CREATE TRIGGER run_webhooks AFTER UPDATE OF status ON runs
WHEN (NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    OR (NEW.status = 'waiting' AND NEW.wait_reason = 'user'
        AND (OLD.status IS NOT 'waiting' OR OLD.wait_key IS NOT NEW.wait_key))
BEGIN
    INSERT INTO webhook_deliveries (delivery_id, webhook_id, run_id, event, url, next_attempt_at,
        retry_until, created_at, updated_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), w.webhook_id, NEW.run_id, e.event, w.url, e.now,
        e.now + 86400.0, e.iso, e.iso
    FROM webhooks w, (SELECT
            CASE WHEN NEW.status = 'completed' AND NEW.output_failed = 0 THEN 'run.completed'
                 WHEN NEW.status IN ('completed', 'failed') THEN 'run.failed'
                 WHEN NEW.status = 'cancelled' THEN 'run.cancelled'
                 ELSE 'run.waiting' END AS event,
            (julianday('now') - 2440587.5) * 86400.0 AS now,
            strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') AS iso) e
    WHERE w.deleted_at IS NULL
        AND EXISTS (SELECT 1 FROM json_each(w.events) j WHERE j.value = e.event)
        AND (w.workflow_id IS NULL OR substr(NEW.workflow_id, 1, length(w.workflow_id)) = w.workflow_id)
        AND (w.tag IS NULL OR EXISTS (SELECT 1 FROM run_tags t INDEXED BY run_tags_run
                                      WHERE t.run_id = NEW.run_id AND t.tag = w.tag))
    UNION ALL
    SELECT 'msg_' || lower(hex(randomblob(16))), NULL, NEW.run_id, e.event, NEW.webhook_url, e.now,
        e.now + 86400.0, e.iso, e.iso
    FROM (SELECT
            CASE WHEN NEW.status = 'completed' AND NEW.output_failed = 0 THEN 'run.completed'
                 WHEN NEW.status IN ('completed', 'failed') THEN 'run.failed'
                 WHEN NEW.status = 'cancelled' THEN 'run.cancelled'
                 ELSE 'run.waiting' END AS event,
            (julianday('now') - 2440587.5) * 86400.0 AS now,
            strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') AS iso) e
    WHERE NEW.webhook_url IS NOT NULL;
END;
