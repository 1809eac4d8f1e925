-- 0002_bundles_starts_events: bundles in the db, idempotent starts, event dispatch, parent wake-up.

-- Workflow bundles (.flow zips), uploaded or imported from ABSTRACTGATEWAY_FLOWS_DIR. The db is the
-- one catalogue the API lists and the runners compile from.
CREATE TABLE bundles (
    bundle_id       TEXT NOT NULL,
    bundle_version  TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    content         BLOB NOT NULL,
    manifest        BLOB NOT NULL,          -- manifest.json (msgspec JSON)
    source          TEXT NOT NULL,          -- upload | flows_dir
    created_at      TEXT NOT NULL,
    -- DELETE hides a version from listings and new starts; runs already started still compile it.
    removed_at      TEXT,
    PRIMARY KEY (bundle_id, bundle_version)
);

-- A deprecated bundle (flow_id '') or flow refuses new starts; runs already going continue.
CREATE TABLE bundle_deprecations (
    bundle_id   TEXT NOT NULL,
    flow_id     TEXT NOT NULL DEFAULT '',
    reason      TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (bundle_id, flow_id)
);

-- What a runner found compiling a bundle (health and listings report failures).
CREATE TABLE bundle_checks (
    bundle_id       TEXT NOT NULL,
    bundle_version  TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    compile_error   TEXT,
    checked_at      TEXT NOT NULL,
    PRIMARY KEY (bundle_id, bundle_version, sha256)
);

-- Idempotency-Key of runs/start: the same key answers the same run.
CREATE TABLE run_start_keys (
    idempotency_key  TEXT PRIMARY KEY,
    run_id           TEXT NOT NULL,
    request_sha256   TEXT NOT NULL,
    created_at       TEXT NOT NULL
);

-- COMPLETED with output.success == false: clients are told "failed".
ALTER TABLE runs ADD COLUMN output_failed INTEGER NOT NULL DEFAULT 0;
-- abstractruntime's session attribution (chat | automation | occurrence | discussion), asked per session.
ALTER TABLE runs ADD COLUMN session_kind TEXT;

-- emit_event commands are dispatched by whichever runner takes them first, not by a run's holder.
CREATE INDEX commands_pending_events ON commands(seq) WHERE status = 'pending' AND type = 'emit_event';

-- A child reaching a terminal status makes its parent due when the parent waits on it, in the same
-- statement as the child's save: no window in which the parent is forgotten.
CREATE TRIGGER child_finished AFTER UPDATE OF status ON runs
WHEN NEW.parent_run_id IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE runs SET due_at = MIN(COALESCE(due_at, (julianday('now') - 2440587.5) * 86400.0),
                                 (julianday('now') - 2440587.5) * 86400.0)
    WHERE run_id = NEW.parent_run_id AND status = 'waiting' AND paused = 0
        AND wait_key = 'subworkflow:' || NEW.run_id;
END;
