-- 0002_bundles_starts_events (PostgreSQL twin): bundles in the db, idempotent starts, event dispatch,
-- parent wake-up.

CREATE TABLE bundles (
    bundle_id       text NOT NULL,
    bundle_version  text NOT NULL,
    sha256          text NOT NULL,
    size_bytes      bigint NOT NULL,
    content         bytea NOT NULL,
    manifest        bytea NOT NULL,
    source          text NOT NULL,
    created_at      text NOT NULL,
    removed_at      text,
    PRIMARY KEY (bundle_id, bundle_version)
);

CREATE TABLE bundle_deprecations (
    bundle_id   text NOT NULL,
    flow_id     text NOT NULL DEFAULT '',
    reason      text,
    created_at  text NOT NULL,
    PRIMARY KEY (bundle_id, flow_id)
);

CREATE TABLE bundle_checks (
    bundle_id       text NOT NULL,
    bundle_version  text NOT NULL,
    sha256          text NOT NULL,
    compile_error   text,
    checked_at      text NOT NULL,
    PRIMARY KEY (bundle_id, bundle_version, sha256)
);

-- Idempotency-Key of runs/start: inserted with ON CONFLICT DO NOTHING RETURNING (a read-then-insert
-- lets two concurrent duplicates both through under READ COMMITTED).
CREATE TABLE run_start_keys (
    idempotency_key  text PRIMARY KEY,
    run_id           text NOT NULL,
    request_sha256   text NOT NULL,
    created_at       text NOT NULL
);

ALTER TABLE runs ADD COLUMN output_failed integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN session_kind text;

CREATE INDEX commands_pending_events ON commands(seq) WHERE status = 'pending' AND type = 'emit_event';

-- A child reaching a terminal status makes its waiting parent due, in the child's transaction. Locks
-- child then parent: a statement locking parent then child can deadlock with it (retry 40P01).
CREATE FUNCTION child_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t double precision := gw_epoch();
BEGIN
    UPDATE runs SET due_at = LEAST(COALESCE(due_at, t), t)
    WHERE run_id = NEW.parent_run_id AND status = 'waiting' AND paused = 0
        AND wait_key = 'subworkflow:' || NEW.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER child_finished AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (NEW.parent_run_id IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION child_finished();
