-- 0009_operations (PostgreSQL twin): tags and metadata on runs, reruns, bulk commands, webhook
-- subscriptions and deliveries, retention.

ALTER TABLE runs ADD COLUMN tags bytea;
ALTER TABLE runs ADD COLUMN metadata bytea;
ALTER TABLE runs ADD COLUMN rerun_of text;
ALTER TABLE runs ADD COLUMN ttl_s double precision;
ALTER TABLE runs ADD COLUMN webhook_url text;
ALTER TABLE runs ADD COLUMN expires_at double precision;

CREATE INDEX runs_rerun_of ON runs(rerun_of) WHERE rerun_of IS NOT NULL;
CREATE INDEX runs_created_page ON runs(created_at DESC, run_id);
CREATE INDEX runs_status_page ON runs(status, created_at DESC, run_id);
CREATE INDEX runs_output_failed_page ON runs(created_at DESC, run_id) WHERE output_failed = 1;

-- A primary key cannot be declared DESC here; a b-tree reads backwards as fast, so the SQLite key
-- (tag, created_at DESC, run_id) becomes (tag, created_at, run_id).
CREATE TABLE run_tags (
    tag         text NOT NULL,
    created_at  text NOT NULL,
    run_id      text NOT NULL,
    PRIMARY KEY (tag, created_at, run_id)
);
CREATE INDEX run_tags_run ON run_tags(run_id);

CREATE TABLE run_metadata (
    key         text NOT NULL,
    value       text NOT NULL,
    created_at  text NOT NULL,
    run_id      text NOT NULL,
    PRIMARY KEY (key, value, created_at, run_id)
);
CREATE INDEX run_metadata_run ON run_metadata(run_id);

CREATE TABLE bulk_ops (
    bulk_id          text PRIMARY KEY,
    type             text NOT NULL,
    filter           bytea NOT NULL,
    payload          bytea NOT NULL,
    request_sha256   text NOT NULL,
    status           text NOT NULL DEFAULT 'expanding',
    matched          bigint NOT NULL DEFAULT 0,
    cursor_created   text,
    cursor_run_id    text,
    created_at       text NOT NULL,
    updated_at       text NOT NULL
);
CREATE INDEX bulk_ops_expanding ON bulk_ops(created_at) WHERE status = 'expanding';

-- Retention: a run with a ttl expires ttl_s after it ends (database clock).
CREATE FUNCTION run_expiry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE runs SET expires_at = gw_epoch() + NEW.ttl_s WHERE run_id = NEW.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER run_expiry AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (NEW.ttl_s IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION run_expiry();
CREATE INDEX runs_expiry ON runs(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX commands_done_run ON commands(run_id) WHERE status != 'pending';
CREATE INDEX run_start_keys_run ON run_start_keys(run_id);

CREATE TABLE webhooks (
    webhook_id   text PRIMARY KEY,
    url          text NOT NULL,
    events       bytea NOT NULL,
    workflow_id  text,
    tag          text,
    secrets      bytea NOT NULL,
    created_at   text NOT NULL,
    deleted_at   text
);
CREATE TABLE webhook_keys (
    name        text PRIMARY KEY,
    secret      text NOT NULL,
    created_at  text NOT NULL
);
CREATE TABLE webhook_deliveries (
    delivery_id       text PRIMARY KEY,
    webhook_id        text,
    run_id            text NOT NULL,
    event             text NOT NULL,
    url               text NOT NULL,
    body              bytea,
    status            text NOT NULL DEFAULT 'pending',
    attempts          bigint NOT NULL DEFAULT 0,
    next_attempt_at   double precision NOT NULL,
    retry_until       double precision NOT NULL,
    claimed_until     double precision,
    last_status_code  integer,
    last_error        text,
    created_at        text NOT NULL,
    updated_at        text NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
CREATE INDEX webhook_deliveries_run ON webhook_deliveries(run_id);

-- One delivery per matching subscription (and the run's own webhook_url) in the statement that ends
-- the run or makes it wait for a user. delivery ids: 'msg_' and 32 hex digits, as on SQLite.
CREATE FUNCTION run_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t double precision := gw_epoch();
    iso text := to_char(to_timestamp(t) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"');
    ev text := CASE WHEN NEW.status = 'completed' AND NEW.output_failed = 0 THEN 'run.completed'
                    WHEN NEW.status IN ('completed', 'failed') THEN 'run.failed'
                    WHEN NEW.status = 'cancelled' THEN 'run.cancelled'
                    ELSE 'run.waiting' END;
BEGIN
    INSERT INTO webhook_deliveries (delivery_id, webhook_id, run_id, event, url, next_attempt_at,
        retry_until, created_at, updated_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.webhook_id, NEW.run_id, ev, w.url, t,
        t + 86400.0, iso, iso
    FROM webhooks w
    WHERE w.deleted_at IS NULL
        AND jsonb_exists(convert_from(w.events, 'UTF8')::jsonb, ev)
        AND (w.workflow_id IS NULL OR left(NEW.workflow_id, length(w.workflow_id)) = w.workflow_id)
        AND (w.tag IS NULL OR EXISTS (SELECT 1 FROM run_tags rt WHERE rt.run_id = NEW.run_id AND rt.tag = w.tag));
    IF NEW.webhook_url IS NOT NULL THEN
        INSERT INTO webhook_deliveries (delivery_id, webhook_id, run_id, event, url, next_attempt_at,
            retry_until, created_at, updated_at)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NULL, NEW.run_id, ev, NEW.webhook_url,
            t, t + 86400.0, iso, iso);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER run_webhooks AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN ((NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    OR (NEW.status = 'waiting' AND NEW.wait_reason = 'user'
        AND (OLD.status IS DISTINCT FROM 'waiting' OR OLD.wait_key IS DISTINCT FROM NEW.wait_key)))
EXECUTE FUNCTION run_webhooks();
