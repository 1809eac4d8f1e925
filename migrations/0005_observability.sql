-- 0005_observability: the request that caused a command (its X-Request-ID, carried to the runner's
-- log lines), and the metrics each runner publishes with its heartbeat (the API exports them).

ALTER TABLE commands ADD COLUMN request_id TEXT;
-- Prometheus text exposition of the runner's own registry, rewritten on each heartbeat.
ALTER TABLE runners ADD COLUMN metrics TEXT;
