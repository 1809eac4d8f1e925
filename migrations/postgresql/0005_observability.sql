-- 0005_observability (PostgreSQL twin): a command's request id, runners' published metrics.
ALTER TABLE commands ADD COLUMN request_id text;
ALTER TABLE runners ADD COLUMN metrics text;
