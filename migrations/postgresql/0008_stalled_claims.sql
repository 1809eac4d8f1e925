-- 0008_stalled_claims (PostgreSQL twin): poison runs (see migrations/0008_stalled_claims.sql).
ALTER TABLE runs ADD COLUMN stalled_claims integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN stall_epoch bigint;

-- A ledger append also clears the stall count.
CREATE OR REPLACE FUNCTION ledger_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE runs SET ledger_len = NEW.seq, feed_seq = nextval('runs_feed_seq'),
        feed_xid = pg_current_xact_id(), stalled_claims = 0
    WHERE run_id = NEW.run_id AND ledger_len < NEW.seq;
    RETURN NULL;
END $$;
