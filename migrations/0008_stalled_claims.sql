-- Poison runs. stalled_claims counts the claims of a run that ended without a release while a
-- worker had been on the run across a heartbeat (marked by the heartbeat, at most once per claim:
-- stall_epoch), with no ledger progress since. A release or a ledger append clears it. A runner
-- fails a run whose count reached 3 instead of claiming it again. A runner killed at random (a
-- deploy, the chaos suite) rarely counts: the run makes progress, or was never being worked on.
ALTER TABLE runs ADD COLUMN stalled_claims INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN stall_epoch INTEGER;

DROP TRIGGER ledger_appended;
CREATE TRIGGER ledger_appended AFTER INSERT ON ledger
BEGIN
    UPDATE runs SET ledger_len = NEW.seq, feed_seq = (SELECT COALESCE(MAX(feed_seq), 0) + 1 FROM runs),
        stalled_claims = 0
    WHERE run_id = NEW.run_id;
END;
