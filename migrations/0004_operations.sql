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
CREATE INDEX commands_run ON commands(run_id);
CREATE INDEX run_start_keys_run ON run_start_keys(run_id);
