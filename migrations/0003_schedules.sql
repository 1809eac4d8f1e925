-- 0003_schedules: scheduled and recurring runs.
-- A schedule belongs to its scheduled parent run (run_id): the runner holding that run's lease fires
-- it, creating the child run in the same transaction that advances the schedule (fenced by the lease).

CREATE TABLE schedules (
    run_id              TEXT PRIMARY KEY,      -- the scheduled parent run
    workflow_id         TEXT NOT NULL,         -- what each firing starts (bundle@version:flow)
    bundle_id           TEXT NOT NULL,
    bundle_version      TEXT NOT NULL,
    flow_id             TEXT NOT NULL,
    input_data          BLOB NOT NULL,         -- msgspec JSON object
    session_id          TEXT,
    share_context       INTEGER NOT NULL DEFAULT 0,
    start_at            REAL NOT NULL,         -- unix seconds
    interval_s          REAL,                  -- every N seconds, or
    cron                TEXT,                  -- a 5-field cron expression in `timezone`
    timezone            TEXT NOT NULL DEFAULT 'UTC',
    repeat_count        INTEGER,               -- total firings (NULL: no limit)
    repeat_until        REAL,                  -- no firing after (NULL: no limit)
    catch_up            TEXT NOT NULL DEFAULT 'one',    -- skip | one | all (firings missed while down)
    overlap             TEXT NOT NULL DEFAULT 'skip',   -- skip | allow (a firing while the last child runs)
    next_fire_at        REAL,                  -- NULL once finished
    fired_count         INTEGER NOT NULL DEFAULT 0,
    skipped_count       INTEGER NOT NULL DEFAULT 0,
    last_fired_at       REAL,
    last_child_run_id   TEXT,
    status              TEXT NOT NULL DEFAULT 'active',  -- active | finished | cancelled
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
