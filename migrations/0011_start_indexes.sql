-- 0011_start_indexes: one index fewer for every start to write. runs_created (created_at) is a prefix
-- of runs_created_page (created_at DESC, run_id, from 0009), which serves every created_at range and
-- order the old one did (SQLite walks an index either way): each run's insert paid for both.
DROP INDEX runs_created;
