-- 0003_schedules (PostgreSQL twin): scheduled and recurring runs. Times in unix seconds from the
-- database clock; one child per firing is guarded by the fence on the schedule's parent run.

CREATE TABLE schedules (
    run_id              text PRIMARY KEY,
    workflow_id         text NOT NULL,
    bundle_id           text NOT NULL,
    bundle_version      text NOT NULL,
    flow_id             text NOT NULL,
    input_data          bytea NOT NULL,
    session_id          text,
    share_context       integer NOT NULL DEFAULT 0,
    start_at            double precision NOT NULL,
    interval_s          double precision,
    cron                text,
    timezone            text NOT NULL DEFAULT 'UTC',
    repeat_count        bigint,
    repeat_until        double precision,
    catch_up            text NOT NULL DEFAULT 'one',
    overlap             text NOT NULL DEFAULT 'skip',
    next_fire_at        double precision,
    fired_count         bigint NOT NULL DEFAULT 0,
    skipped_count       bigint NOT NULL DEFAULT 0,
    last_fired_at       double precision,
    last_child_run_id   text,
    status              text NOT NULL DEFAULT 'active',
    created_at          text NOT NULL,
    updated_at          text NOT NULL
);
