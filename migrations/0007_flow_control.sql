-- 0007_flow_control: runner labels, concurrency keys, priorities, fair claim order and rate limits.
--
-- A run may carry a priority (1-5), a concurrency key and the runner labels it requires. Claims take
-- higher priority first, then the claim order: for a queued start its fair tag (start-time fair
-- queueing across keys, so one key's backlog cannot starve the others), for anything else its due
-- time. A key may limit how many of its runs hold a slot at once (max_concurrent) and how many starts
-- begin per window (rate_limit / rate_window_s).

ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 3;
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
-- The labels a runner must have to claim this run: a sorted JSON list, NULL when any runner may.
ALTER TABLE runs ADD COLUMN requires TEXT;
-- The claim order of a queued keyed start (unix seconds scale); NULL: its due time.
ALTER TABLE runs ADD COLUMN fair_tag REAL;
-- 1: waiting for a slot of its key (out of the claimable set until a slot is handed to it).
ALTER TABLE runs ADD COLUMN hold INTEGER NOT NULL DEFAULT 0;
-- 1: holds one of its key's max_concurrent slots.
ALTER TABLE runs ADD COLUMN slot INTEGER NOT NULL DEFAULT 0;
-- When a runner admitted the start of a keyed run (rate limits count these).
ALTER TABLE runs ADD COLUMN begun_at REAL;
-- The claim order: a queued run's fair tag (its due time without one), any other run's due time. A
-- real column kept by the two triggers below, not a generated one: a claim then maintains plain
-- values in runs_claim_order (measured: a VIRTUAL generated column cost claims ~20% of their rate).
ALTER TABLE runs ADD COLUMN claim_order REAL;
UPDATE runs SET claim_order = due_at;
CREATE TRIGGER runs_claim_order_inserted AFTER INSERT ON runs
WHEN NEW.claim_order IS NOT (CASE WHEN NEW.status = 'queued' THEN COALESCE(NEW.fair_tag, NEW.due_at) ELSE NEW.due_at END)
BEGIN
    UPDATE runs SET claim_order = CASE WHEN status = 'queued' THEN COALESCE(fair_tag, due_at) ELSE due_at END
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER runs_claim_order_updated AFTER UPDATE OF status, due_at, fair_tag, claim_order ON runs
WHEN NEW.claim_order IS NOT (CASE WHEN NEW.status = 'queued' THEN COALESCE(NEW.fair_tag, NEW.due_at) ELSE NEW.due_at END)
BEGIN
    UPDATE runs SET claim_order = CASE WHEN status = 'queued' THEN COALESCE(fair_tag, due_at) ELSE due_at END
    WHERE rowid = NEW.rowid;
END;

-- The claimable set, now without held runs and in claim order: one index replaces runs_claimable, so
-- a claim takes each row out of one index, not two (measured: ~20% more keyed claims/s). The work
-- probe and the queue depth read it too. Every column those read is in it (lease_owner and hold too,
-- constant in it, or SQLite reads the table row to test them): the claim's subquery reads no table row.
DROP INDEX runs_claimable;
CREATE INDEX runs_claim_order ON runs(priority DESC, claim_order, due_at, requires, lease_owner, hold)
    WHERE lease_owner IS NULL AND due_at IS NOT NULL AND hold = 0;

CREATE INDEX runs_key_slots ON runs(concurrency_key) WHERE slot = 1;
CREATE INDEX runs_key_held ON runs(concurrency_key, priority DESC, created_at) WHERE hold = 1;
CREATE INDEX runs_key_begun ON runs(concurrency_key, begun_at) WHERE begun_at IS NOT NULL;
CREATE INDEX runs_requires ON runs(requires, status) WHERE requires IS NOT NULL;

-- One row per concurrency key: its limits (the latest start or schedule naming the key sets them)
-- and the fair tag its last queued start got.
CREATE TABLE flow_keys (
    key             TEXT PRIMARY KEY,
    max_concurrent  INTEGER,               -- NULL: no limit
    count_waiting   INTEGER NOT NULL DEFAULT 0,   -- 1: a waiting run keeps its slot
    rate_limit      INTEGER,               -- at most this many starts begun ...
    rate_window_s   REAL,                  -- ... per this many seconds (NULL: no rate limit)
    last_tag        REAL,
    updated_at      TEXT NOT NULL
) WITHOUT ROWID;

-- Which flow control a schedule's children get (JSON; NULL: none).
ALTER TABLE schedules ADD COLUMN flow TEXT;

-- A run holding a slot gives it back when it ends, or when it starts waiting unless its key counts
-- waiting runs: a leased run when its lease is released or reclaimed (queries.RELEASE_SETTLED,
-- RECLAIM_EXPIRED: after the run's last ledger record, so its successor never overlaps it), an
-- unleased one (a tool's save) here ...
CREATE TRIGGER flow_slot_released AFTER UPDATE OF status ON runs
WHEN OLD.slot = 1 AND NEW.lease_owner IS NULL AND (NEW.status IN ('completed', 'failed', 'cancelled') OR (NEW.status = 'waiting'
    AND NOT EXISTS (SELECT 1 FROM flow_keys WHERE key = NEW.concurrency_key AND count_waiting = 1)))
BEGIN
    UPDATE runs SET slot = 0 WHERE run_id = NEW.run_id;
END;

-- ... and a freed slot goes to the key's next held run (higher priority, then older) in the same
-- statement: no window in which a slot is free while runs wait for it.
CREATE TRIGGER flow_slot_freed AFTER UPDATE OF slot ON runs
WHEN OLD.slot = 1 AND NEW.slot = 0 AND NEW.concurrency_key IS NOT NULL
BEGIN
    UPDATE runs SET hold = 0, slot = 1,
        due_at = MIN(COALESCE(due_at, (julianday('now') - 2440587.5) * 86400.0),
                     (julianday('now') - 2440587.5) * 86400.0)
    WHERE run_id IN (
        SELECT run_id FROM runs INDEXED BY runs_key_held WHERE concurrency_key = NEW.concurrency_key
        AND hold = 1 ORDER BY priority DESC, created_at
        LIMIT MAX(0, COALESCE((SELECT max_concurrent FROM flow_keys WHERE key = NEW.concurrency_key), 1 << 30)
            - (SELECT count(*) FROM runs INDEXED BY runs_key_slots
               WHERE concurrency_key = NEW.concurrency_key AND slot = 1)));
END;

-- A keyed run that ends without a slot (cancelled while queued, say) may leave room too.
CREATE TRIGGER flow_run_ended AFTER UPDATE OF status ON runs
WHEN OLD.slot = 0 AND NEW.slot = 0 AND NEW.concurrency_key IS NOT NULL
    AND NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    UPDATE runs SET hold = 0, slot = 1,
        due_at = MIN(COALESCE(due_at, (julianday('now') - 2440587.5) * 86400.0),
                     (julianday('now') - 2440587.5) * 86400.0)
    WHERE run_id IN (
        SELECT run_id FROM runs INDEXED BY runs_key_held WHERE concurrency_key = NEW.concurrency_key
        AND hold = 1 ORDER BY priority DESC, created_at
        LIMIT MAX(0, COALESCE((SELECT max_concurrent FROM flow_keys WHERE key = NEW.concurrency_key), 1 << 30)
            - (SELECT count(*) FROM runs INDEXED BY runs_key_slots
               WHERE concurrency_key = NEW.concurrency_key AND slot = 1)));
END;

-- A cancel reaches a held run at once: it is claimed and cancelled without taking a slot.
CREATE TRIGGER flow_cancel_unholds AFTER INSERT ON commands WHEN NEW.type = 'cancel'
BEGIN
    UPDATE runs SET hold = 0 WHERE run_id = NEW.run_id AND hold = 1;
END;
