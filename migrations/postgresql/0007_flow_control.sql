-- 0007_flow_control (PostgreSQL twin): runner labels, concurrency keys, priorities, fair claim order
-- and rate limits (see migrations/0007_flow_control.sql for the model).

ALTER TABLE runs ADD COLUMN priority integer NOT NULL DEFAULT 3;
ALTER TABLE runs ADD COLUMN concurrency_key text;
ALTER TABLE runs ADD COLUMN requires text;
ALTER TABLE runs ADD COLUMN fair_tag double precision;
ALTER TABLE runs ADD COLUMN hold integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN slot integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN begun_at double precision;
ALTER TABLE runs ADD COLUMN claim_order double precision;
UPDATE runs SET claim_order = due_at;

-- The claim order, kept by one BEFORE trigger (SQLite needs two AFTER triggers that update the row
-- again; here the row is written once).
CREATE FUNCTION runs_claim_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.claim_order := CASE WHEN NEW.status = 'queued' THEN COALESCE(NEW.fair_tag, NEW.due_at)
                            ELSE NEW.due_at END;
    RETURN NEW;
END $$;
CREATE TRIGGER runs_claim_order BEFORE INSERT OR UPDATE OF status, due_at, fair_tag, claim_order ON runs
FOR EACH ROW EXECUTE FUNCTION runs_claim_order();

DROP INDEX runs_claimable;
CREATE INDEX runs_claim_order ON runs(priority DESC, claim_order, due_at) INCLUDE (requires)
    WHERE lease_owner IS NULL AND due_at IS NOT NULL AND hold = 0;

CREATE INDEX runs_key_slots ON runs(concurrency_key) WHERE slot = 1;
CREATE INDEX runs_key_held ON runs(concurrency_key, priority DESC, created_at) WHERE hold = 1;
CREATE INDEX runs_key_begun ON runs(concurrency_key, begun_at) WHERE begun_at IS NOT NULL;
CREATE INDEX runs_requires ON runs(requires, status) WHERE requires IS NOT NULL;

CREATE TABLE flow_keys (
    key             text PRIMARY KEY,
    max_concurrent  bigint,
    count_waiting   integer NOT NULL DEFAULT 0,
    rate_limit      bigint,
    rate_window_s   double precision,
    last_tag        double precision,
    updated_at      text NOT NULL
);

ALTER TABLE schedules ADD COLUMN flow text;

-- A run holding a slot gives it back when it ends, or when it starts waiting unless its key counts
-- waiting runs (a leased run: by the release / reclaim statements; an unleased one here).
CREATE FUNCTION flow_slot_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('completed', 'failed', 'cancelled') OR (NEW.status = 'waiting'
            AND NOT EXISTS (SELECT 1 FROM flow_keys WHERE key = NEW.concurrency_key AND count_waiting = 1)) THEN
        UPDATE runs SET slot = 0 WHERE run_id = NEW.run_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER flow_slot_released AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (OLD.slot = 1 AND NEW.lease_owner IS NULL)
EXECUTE FUNCTION flow_slot_released();

-- A freed slot (or a keyed run ending without one) goes to the key's next held runs (higher priority,
-- then older). Under READ COMMITTED two transactions freeing slots of one key would both count the
-- same free slots and over-grant: a transaction-scoped advisory lock per key serialises the hand-out.
CREATE FUNCTION flow_hand_out_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t double precision := gw_epoch();
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('gw.flow_key:' || NEW.concurrency_key, 0));
    UPDATE runs SET hold = 0, slot = 1, due_at = LEAST(COALESCE(due_at, t), t)
    WHERE run_id IN (
        SELECT run_id FROM runs WHERE concurrency_key = NEW.concurrency_key AND hold = 1
        ORDER BY priority DESC, created_at
        LIMIT GREATEST(0, COALESCE((SELECT max_concurrent FROM flow_keys WHERE key = NEW.concurrency_key), 1 << 30)
            - (SELECT count(*) FROM runs WHERE concurrency_key = NEW.concurrency_key AND slot = 1)));
    RETURN NULL;
END $$;
CREATE TRIGGER flow_slot_freed AFTER UPDATE OF slot ON runs FOR EACH ROW
WHEN (OLD.slot = 1 AND NEW.slot = 0 AND NEW.concurrency_key IS NOT NULL)
EXECUTE FUNCTION flow_hand_out_slots();
CREATE TRIGGER flow_run_ended AFTER UPDATE OF status ON runs FOR EACH ROW
WHEN (OLD.slot = 0 AND NEW.slot = 0 AND NEW.concurrency_key IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION flow_hand_out_slots();

-- A cancel reaches a held run at once: it is claimed and cancelled without taking a slot.
CREATE FUNCTION flow_cancel_unholds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE runs SET hold = 0 WHERE run_id = NEW.run_id AND hold = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER flow_cancel_unholds AFTER INSERT ON commands FOR EACH ROW WHEN (NEW.type = 'cancel')
EXECUTE FUNCTION flow_cancel_unholds();
