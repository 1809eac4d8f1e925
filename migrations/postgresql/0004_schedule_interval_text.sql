-- 0004_schedule_interval_text (PostgreSQL twin): the schedule's interval as the client sent it.
-- `interval` is a PostgreSQL keyword: statements name this column quoted ("interval").
ALTER TABLE schedules ADD COLUMN "interval" text;
