-- 0004_schedule_interval_text: the schedule's interval as the client sent it ("2s", "1h").
-- Clients of the original gateway read `schedule.interval` back exactly as they sent it; interval_s
-- (what the runner computes with) cannot say whether "60s" or "1m" was asked. NULL for cron and
-- one-off schedules, and for rows stored before this migration (shown from interval_s then).
ALTER TABLE schedules ADD COLUMN interval TEXT;
